"""The demo's held-out comparison: the trained model against baselines, a left/right swap rate, a verdict.

Rows: ``mean pose`` (the mean normalised training pose placed in each held-out box), ``untrained`` (the same
network with the run's random weights), the starting weights before training when the run started from
some, and ``trained``. Metrics are OKS AP/AR (pycocotools, in [0, 1]), PCK@0.2 (percent), torso PCK@0.2 and the
left/right swap and mirror rates (percent, :func:`swap_rate`, :func:`~dspose_graph.eval.pck.mirror_rate`).

Shapes: N held-out persons, K keypoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from dspose_graph.eval.pck import swap_rate
from dspose_graph.train.evaluate import compute_metrics, mean_pose, mean_pose_predictions, oks_sigmas, predict_dataset
from dspose_graph.topology.schemas import KeypointSchema

METRICS = ("AP", "AP50", "AP75", "AR", "PCK@0.2", "torso_PCK@0.2", "swap", "mirror")
PERCENT = ("PCK@0.2", "torso_PCK@0.2", "swap", "mirror")  # already in percent; OKS AP/AR are shown x 100
START_ROW = "pretrained, not fine-tuned"
ROWS = ("mean pose", "untrained", START_ROW, "trained")


def score(pred: dict[str, np.ndarray], val_set: Dataset, schema: KeypointSchema) -> dict[str, float]:
    """OKS AP/AR, PCK@0.2 and swap rate of a prediction dict on the COCO-format held-out set."""
    base = val_set.dataset if isinstance(val_set, Subset) else val_set
    metrics = compute_metrics(pred, coco_gt=base.coco, sigmas=oks_sigmas(schema), schema=schema)
    if "swap" not in metrics:  # compute_metrics leaves it out when no pair is labelled: swap_rate says why
        metrics["swap"] = swap_rate(pred["coords"], pred["gt"], schema)
    return metrics


def evaluate_rows(trained: torch.nn.Module, baselines: dict[str, torch.nn.Module], train_set: Dataset,
                  val_set: Dataset, *, flip_test: bool, batch_size: int = 32, workers: int = 0) -> dict[str, dict[str, float]]:
    """Every row of the table: the ``trained`` model, the ``baselines`` models and the mean training pose.

    ``train_set`` must be un-augmented (the mean pose is taken from its ground-truth boxes).
    """
    rows: dict[str, dict[str, float]] = {}
    reference = None
    for name, model in {"trained": trained, **baselines}.items():
        pred = predict_dataset(model, val_set, batch_size=batch_size, flip_test=flip_test, decode="dark")
        rows[name] = score(pred, val_set, model.schema)
        reference = pred
    pose = mean_pose(train_set, workers=workers)
    rows["mean pose"] = score(mean_pose_predictions(pose, reference), val_set, trained.schema)
    return rows


def metric_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table of the rows present, in the order of :data:`ROWS`; AP/AR shown in percent."""
    lines = ["| model | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name in (n for n in ROWS if n in rows):
        r = rows[name]
        cells = ["n/a" if m not in r else f"{r[m]:.1f}" if m in PERCENT else f"{100 * r[m]:.1f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: dict[str, dict[str, float]]) -> tuple[bool, str]:
    """Whether the trained model beats the untrained model and the mean pose, and a sentence saying so.

    A metric that is 0 for all three (OKS AP before any pose reaches OKS 0.5) cannot separate them and is
    reported as such; the model must beat both baselines on every metric that does separate them.
    """
    beats, ties = [], []
    for m in ("AP", "PCK@0.2", "torso_PCK@0.2"):
        if any(m not in rows[n] for n in ("trained", "untrained", "mean pose")):
            continue
        values = [rows[n][m] for n in ("trained", "untrained", "mean pose")]
        if max(values) <= 0:
            ties.append(m)
            continue
        beats.append((m, values[0] > max(values[1:])))
    learned = bool(beats) and all(ok for _, ok in beats)
    text = ("The trained model beats both baselines on held-out " if learned
            else "The trained model does NOT beat both baselines on held-out ")
    text += " and ".join(m for m, _ in beats) + "."
    if ties:
        text += (f" {' and '.join(ties)} is 0 for all three: no held-out pose reaches OKS 0.5 yet, so it does "
                 "not separate them at this training budget.")
    if START_ROW in rows:
        gains = [f"AP {100 * (rows['trained']['AP'] - rows[START_ROW]['AP']):+.1f}",
                 f"PCK@0.2 {rows['trained']['PCK@0.2'] - rows[START_ROW]['PCK@0.2']:+.1f}"]
        text += " Training changed the starting weights' figures by " + ", ".join(gains) + " (points)."
    text += f" Left/right swap rate of the trained model: {rows['trained']['swap']:.1f}%."
    return learned, text


def goal_lines(rows: dict[str, dict[str, float]], real: bool = False) -> list[str]:
    """The demo's targets, each with its measured value and met / NOT met.

    Real photographs (LSPET): torso PCK@0.2 >= 70, swap <= 10 % and torso PCK above every baseline row; generated
    people: OKS AP >= 25, PCK@0.2 >= mean pose + 15, swap <= 10 %.
    """
    trained, mean = rows["trained"], rows["mean pose"]
    if real:
        best_other = max((r.get("torso_PCK@0.2", 0.0), name) for name, r in rows.items() if name != "trained")
        checks: list[tuple[str, Any, bool]] = [
            ("torso PCK@0.2 >= 70", f"{trained.get('torso_PCK@0.2', float('nan')):.1f}",
             trained.get("torso_PCK@0.2", 0.0) >= 70),
            ("left/right swap rate <= 10%", f"{trained['swap']:.1f}%", trained["swap"] <= 10),
            ("torso PCK@0.2 above every baseline row", f"{trained.get('torso_PCK@0.2', float('nan')):.1f} vs "
             f"{best_other[0]:.1f} ({best_other[1]})", trained.get("torso_PCK@0.2", 0.0) > best_other[0]),
        ]
    else:
        checks = [
            ("OKS AP >= 25", f"{100 * trained['AP']:.1f}", 100 * trained["AP"] >= 25),
            ("PCK@0.2 >= mean pose + 15", f"{trained['PCK@0.2']:.1f} vs {mean['PCK@0.2'] + 15:.1f}",
             trained["PCK@0.2"] >= mean["PCK@0.2"] + 15),
            ("left/right swap rate <= 10%", f"{trained['swap']:.1f}%", trained["swap"] <= 10),
        ]
    return [f"- {goal}: {value} ({'met' if ok else 'NOT met'})" for goal, value, ok in checks]
