"""Training logs: per-step CSV (append, truncatable for resume), per-epoch CSV, and the learning-curve figure."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from dspose_graph.io import atomic_write_text

log = logging.getLogger(__name__)
STEP_FIELDS = ["global_step", "epoch", "step", "loss", "lr"]


class StepLog:
    """``steps.csv``: one row per loss read (the mean loss of the steps since the last read, see ``run.log_every``),
    flushed at once so a killed run loses nothing logged."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None or not self.path.exists():
            atomic_write_text(self.path, ",".join(STEP_FIELDS) + "\n")
        else:
            # Rows logged after the checkpoint we resume from are replayed by the resumed run: drop them.
            rows = [r for r in read_step_rows(self.path) if int(r["global_step"]) <= resume_step]
            atomic_write_text(self.path, _to_csv(rows, STEP_FIELDS))
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)

    def write(self, global_step: int, epoch: int, step: int, loss: float, lr: float) -> None:
        self._writer.writerow([global_step, epoch, step, repr(float(loss)), repr(float(lr))])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_step_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of ``steps.csv`` whose every field is a number; a torn or garbled row (a run killed mid-write, a
    full disk) is skipped with a warning: the CSV is a log, the checkpoint is what a run resumes from."""
    rows = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                for key in STEP_FIELDS[:3]:
                    int(row[key])
                for key in STEP_FIELDS[3:]:
                    float(row[key])
            except (TypeError, ValueError, KeyError):
                log.warning("%s: line %d is torn or garbled (%s); skipped", path, line,
                            ",".join(v for v in row.values() if isinstance(v, str))[:80])
                continue
            rows.append(row)
    return rows


def _to_csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    lines = [",".join(fields)]
    for r in rows:
        lines.append(",".join("" if r.get(k) is None else str(r.get(k)) for k in fields))
    return "\n".join(lines) + "\n"


def write_epoch_csv(path: str | Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``epochs.csv`` from the whole history (columns: the union of keys, first-seen order)."""
    fields: list[str] = []
    for row in history:
        fields.extend(k for k in row if k not in fields)
    atomic_write_text(path, _to_csv(history, fields))


def epoch_end_steps(step_rows: list[dict[str, Any]], history: list[dict[str, Any]]) -> list[int]:
    """The optimiser step at which each epoch of ``history`` ended: its ``global_step`` when the row carries one
    (every run since the rows do), else the last step logged for that epoch in ``steps.csv``."""
    last: dict[int, int] = {}
    for r in step_rows:
        last[int(r["epoch"])] = max(last.get(int(r["epoch"]), 0), int(r["global_step"]))
    return [int(h["global_step"]) if h.get("global_step") is not None else last.get(int(h["epoch"]), 0)
            for h in history]


def plot_learning_curve(steps_csv: str | Path, history: list[dict[str, Any]], path: str | Path,
                        metric: str | None = None) -> Path:
    """Loss per step (and its per-epoch mean) and, when present, the held-out ``metric`` per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_step_rows(steps_csv)
    steps = [int(r["global_step"]) for r in rows]
    losses = [float(r["loss"]) for r in rows]
    evals = [h for h in history if metric and h.get(metric) is not None]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 5.5, 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, losses, lw=0.8, alpha=0.6, label="step loss")
    if history and steps:
        ax.plot(epoch_end_steps(rows, history), [h["train_loss"] for h in history], "o-", ms=3, label="epoch mean")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE heatmap loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("training loss")
    if evals:
        _plot_metric(axes[0][1], history, metric)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_metric(ax: Any, history: list[dict[str, Any]], metric: str) -> None:
    """The held-out ``metric`` against optimiser steps, with training minutes on the top axis (when the rows
    carry ``global_step`` and ``minutes``), else against epochs."""
    import numpy as np

    rows = [h for h in history if h.get(metric) is not None]
    values = [float(h[metric]) for h in rows]
    if all("global_step" in h and "minutes" in h for h in history):
        steps = np.array([0.0] + [float(h["global_step"]) for h in history])
        minutes = np.array([0.0] + [float(h["minutes"]) for h in history])
        ax.plot([h["global_step"] for h in rows], values, "o-", ms=3)
        ax.set_xlabel("optimiser step")
        if len(steps) > 1 and np.all(np.diff(steps) > 0) and np.all(np.diff(minutes) > 0):
            top = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, steps, minutes),
                                                       lambda m: np.interp(m, minutes, steps)))
            top.set_xlabel("training minutes (evaluation excluded)")
    else:
        ax.plot([h["epoch"] + 1 for h in rows], values, "o-", ms=3)
        ax.set_xlabel("epoch")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(f"held-out {metric}", fontsize=10)


def tensorboard_writer(path: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` writing to ``path``; ``None`` (logged) when tensorboard cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an install requirement, but a broken install must not stop training
        log.warning("tensorboard not importable; TensorBoard logs disabled")
        return None
    return SummaryWriter(str(path))


def plot_run_curve(run_dir: str | Path, out: str | Path | None = None, metric: str | None = None) -> Path:
    """Redraw a finished run folder's learning curve (``loss_curve.png`` by default) from its ``epochs.csv`` and
    ``steps.csv``, with the held-out ``metric`` (default: the one that chose ``best.pt``, from its ``config.yaml``)."""
    run_dir = Path(run_dir)
    for name in ("epochs.csv", "steps.csv", "config.yaml"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name}: not found (is {run_dir} a training run folder?)")
    if metric is None:
        from dspose_graph.train.config import load_config

        metric = load_config(run_dir / "config.yaml").best_metric
    history = [{k: float(v) if k != "epoch" else int(v) for k, v in row.items() if v not in ("", None)}
               for row in read_csv(run_dir / "epochs.csv")]
    if not any(metric in h for h in history):
        raise ValueError(f"{run_dir / 'epochs.csv'}: no column {metric!r} (held-out metric) in any row")
    return plot_learning_curve(run_dir / "steps.csv", history, out or run_dir / "loss_curve.png", metric=metric)
