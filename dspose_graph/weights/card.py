"""Model cards: the ``<name>.json`` beside each shipped ``<name>.pt``.

:func:`ship` turns a finished training run into shipped weights: the checkpoint without its resume state
(``models.checkpoint.export_weights``) and a card that says what the weights are (model, skeleton, input size),
what they were trained on (data, split, licence), how (recipe, command, code commit, machine, steps and minutes)
and how well (held-out metrics with their date and the command that re-makes them). ``dspose weights`` lists
the cards.
"""

from __future__ import annotations

import csv
import datetime
import subprocess
from pathlib import Path
from typing import Any

from dspose_graph.io import atomic_write_json, sha256_file

WEIGHTS_DIR = Path(__file__).resolve().parent
# The held-out metrics a card keeps, when the evaluation produced them (per-joint torso PCK is kept too).
CARD_METRICS = ("torso_PCK@0.2", "PCK@0.2", "AP", "AP50", "AR", "swap", "torso_persons")


def _code_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=WEIGHTS_DIR, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def training_summary(run_dir: str | Path) -> dict[str, Any]:
    """Steps, epochs and training minutes (evaluation excluded) of a run, from its ``epochs.csv``."""
    path = Path(run_dir) / "epochs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected the epochs.csv of a finished training run")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no epoch row")
    last = rows[-1]
    return {"epochs": len(rows), "steps": int(float(last.get("global_step") or 0)),
            "training_minutes": round(sum(float(r["seconds"]) for r in rows) / 60, 1),
            "train_img_s_median": sorted(float(r["img_s"]) for r in rows if r.get("img_s"))[len(rows) // 2]
            if all(r.get("img_s") for r in rows) else None}


def ship(checkpoint: str | Path, name: str, *, metrics: dict[str, float], card: dict[str, Any],
         out_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Write ``out_dir/<name>.pt`` (weights of ``checkpoint``) and ``out_dir/<name>.json`` (the card); returns the card.

    ``metrics`` are the held-out figures to record (e.g. ``metrics_eval.json`` of an evaluation run); ``card``
    holds the fields only the caller knows (``data``, ``licence``, ``recipe``, ``commands``, ``training``...). The
    model's own description (preset, skeleton, input size, graph convolution), the file's hash and size, the code
    commit and the date are added here.
    """
    from dspose_graph.models.checkpoint import export_weights, load_checkpoint

    out_dir = Path(out_dir)
    if not name.isidentifier():
        raise ValueError(f"weights name {name!r} must be a plain identifier (letters, digits, _): it becomes a file name")
    state = load_checkpoint(checkpoint)
    model = state["model"]
    weights = export_weights(checkpoint, out_dir / f"{name}.pt", shipped_as=name,
                             **({"recipe": card["recipe"]} if "recipe" in card else {}))
    kept = {k: round(float(metrics[k]), 4 if k.startswith(("AP", "AR")) else 2) for k in CARD_METRICS if k in metrics}
    kept["per_joint_torso_PCK@0.2"] = {k.split("/", 1)[1]: round(float(v), 1) for k, v in metrics.items()
                                       if k.startswith("torso_PCK@0.2/")}
    config = model.get("config", {})
    record = {
        "name": name, "file": weights.name, "sha256": sha256_file(weights), "bytes": weights.stat().st_size,
        "model": model.get("name"), "schema": (state.get("schema") or {}).get("name"),
        "input_size": config.get("input_size"), "conv": config.get("conv"), "head": config.get("head"),
        **card,
        "val_metrics": kept,
        "code_commit": _code_commit(),
        "date": datetime.date.today().isoformat(),
    }
    path = out_dir / f"{name}.json"
    atomic_write_json(path, record)
    return path
