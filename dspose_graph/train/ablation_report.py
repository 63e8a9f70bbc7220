"""The statistics, tables and figure of an ablation (:mod:`dspose_graph.train.ablation`): rows x seeds of finished runs.

Each run is a :class:`RunResult` (one row, one seed, the last evaluation at the end of its step budget and the
curve of its evaluations). A row's value is the mean +- standard deviation (n - 1) over its seeds of the final
val torso PCK@0.2. A row is compared with the table's reference row *paired by seed* (both rows trained with the
same seed: the same sample order and augmentation), over the seeds both have: the mean difference and its 95 %
t-interval, and a verdict: "helps" when the whole interval is above 0, "hurts" when below, "cannot tell at this
budget" when it holds 0. When it cannot tell, :func:`separation_estimate` says how many seeds, or how many steps
(extrapolating the gap of the learning curves), would separate the rows.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

METRIC = "torso_PCK@0.2"
JOINT_PREFIX = METRIC + "/"


@dataclasses.dataclass
class RunResult:
    """One finished run: ``metrics`` of its last evaluation, ``curve`` its evaluations
    (``[{"global_step", "torso_PCK@0.2", "swap", "train_loss"}, ...]``), ``params`` trainable weights,
    ``ms_per_step`` the median training time per step of its epochs (evaluation not counted)."""

    row: str
    seed: int
    steps: int
    params: int
    ms_per_step: float
    metrics: dict[str, float]
    curve: list[dict[str, float]]
    resumed_at: list[int] = dataclasses.field(default_factory=list)
    finished: str = ""

    @property
    def value(self) -> float:
        return float(self.metrics[METRIC])


@dataclasses.dataclass
class Comparison:
    """``row`` - ``reference`` over ``seeds`` (paired): mean difference, its 95 % t-interval, the verdict."""

    row: str
    reference: str
    seeds: list[int]
    diffs: list[float]
    mean: float | None
    ci: tuple[float, float] | None
    verdict: str
    estimate: str = ""


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; ``None`` for fewer than 2 values)."""
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (4.303 for df 2)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def half_width(sd: float, n: int, level: float = 0.95) -> float:
    """Half the ``level`` t-interval of a mean of ``n`` paired differences with standard deviation ``sd``."""
    return t_quantile(n - 1, level) * sd / math.sqrt(n)


def paired_difference(row: dict[int, float], reference: dict[int, float], level: float = 0.95
                      ) -> tuple[list[int], list[float], float | None, tuple[float, float] | None, str]:
    """``(seeds, differences, mean, interval, verdict)`` of ``row - reference`` over the seeds both have."""
    seeds = sorted(set(row) & set(reference))
    diffs = [row[s] - reference[s] for s in seeds]
    if not diffs:
        return seeds, diffs, None, None, "not comparable yet (no seed run in both rows)"
    mean = float(np.mean(diffs))
    if len(diffs) < 2:
        return seeds, diffs, mean, None, "cannot tell (one paired seed: no spread to judge it by)"
    sd = float(np.std(diffs, ddof=1))
    hw = half_width(sd, len(diffs), level)
    lo, hi = mean - hw, mean + hw
    verdict = "helps" if lo > 0 else "hurts" if hi < 0 else "cannot tell at this budget"
    return seeds, diffs, mean, (lo, hi), verdict


def seeds_needed(mean: float, sd: float, level: float = 0.95, most: int = 1000) -> int | None:
    """The fewest paired seeds whose t-interval excludes 0 if the mean difference and its spread stay as
    measured; ``None`` when more than ``most`` (or the mean is 0)."""
    if mean == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if half_width(sd, n, level) < abs(mean):
            return n
    return None


def gap_budget(curves: dict[int, tuple[list[dict[str, float]], list[dict[str, float]]]], level: float = 0.95,
               most: float = 100.0) -> tuple[float | None, str]:
    """The step budget at which the paired seeds' interval would exclude 0, extrapolated from the curves.

    ``curves``: seed -> (row's curve, reference's curve). The mean paired difference at each evaluation step both
    curves share is fitted as ``a + b ln(step)`` over the last three quarters of the steps; the spread of the
    differences is taken as that at the last step (assumed to stay). Returns ``(steps or None, why)``.
    """
    seeds = sorted(curves)
    common = None
    for s in seeds:
        row, ref = curves[s]
        steps = {int(p["global_step"]) for p in row} & {int(p["global_step"]) for p in ref}
        common = steps if common is None else common & steps
    steps = sorted(common or ())
    if len(seeds) < 2 or len(steps) < 2:
        return None, "too few seeds or evaluations to extrapolate"

    def diff_at(step: int) -> list[float]:
        return [next(p[METRIC] for p in curves[s][0] if int(p["global_step"]) == step)
                - next(p[METRIC] for p in curves[s][1] if int(p["global_step"]) == step) for s in seeds]

    last = steps[-1]
    fit_steps = [s for s in steps if s >= last / 4] if len([s for s in steps if s >= last / 4]) >= 2 else steps
    d = np.array([np.mean(diff_at(s)) for s in fit_steps])
    b, a = np.polyfit(np.log(fit_steps), d, 1)
    final = diff_at(last)
    target = half_width(float(np.std(final, ddof=1)), len(seeds), level)
    sign = 1.0 if np.mean(final) >= 0 else -1.0
    if b * sign <= 0:
        return None, "the gap does not widen along the curves: more steps alone are not expected to separate them"
    needed = float(math.exp((sign * target - a) / b))
    if needed > most * last:
        return None, f"beyond {most:g}x this budget at the curves' rate of widening"
    return max(needed, float(last)), "extrapolated"


def separation_estimate(comparison: Comparison, curves: dict[int, tuple[list, list]]) -> str:
    """What would separate two rows that this budget cannot: seeds at this budget, steps at these seeds."""
    if comparison.mean is None or len(comparison.diffs) < 2:
        return "needs at least 2 seeds in both rows"
    sd = float(np.std(comparison.diffs, ddof=1))
    n = seeds_needed(comparison.mean, sd)
    seeds_text = f"~{n} seeds at this budget" if n else "more than 1000 seeds at this budget"
    steps, why = gap_budget(curves)
    steps_text = f"~{steps:,.0f} steps at {len(comparison.diffs)} seeds (extrapolated from the curves)" \
        if steps is not None else why
    return f"{seeds_text}; {steps_text}"


def compare(results: list[RunResult], rows: Sequence[str], reference: str) -> list[Comparison]:
    """Each row (other than ``reference``) against ``reference``, paired by seed."""
    by_row = {r: {x.seed: x for x in results if x.row == r} for r in rows}
    out = []
    for row in rows:
        if row == reference:
            continue
        ref_runs, row_runs = by_row[reference], by_row[row]
        seeds, diffs, mean, ci, verdict = paired_difference({s: x.value for s, x in row_runs.items()},
                                                            {s: x.value for s, x in ref_runs.items()})
        comparison = Comparison(row, reference, seeds, diffs, mean, ci, verdict)
        if verdict.startswith("cannot tell"):
            comparison.estimate = separation_estimate(
                comparison, {s: (row_runs[s].curve, ref_runs[s].curve) for s in seeds})
        out.append(comparison)
    return out


def _pm(mean: float | None, std: float | None, digits: int = 1) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} +- {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _num(v: Any, digits: int = 1, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def render_markdown(title: str, question: str, rows: Sequence[str], reference: str, results: list[RunResult],
                    labels: dict[str, str], paper: dict[str, float | None], budget: int, seeds: Sequence[int],
                    command: str, pending: list[str]) -> str:
    """The ablation's page: main table, comparisons, per-joint PCK, and what is still to run."""
    comparisons = {c.row: c for c in compare(results, rows, reference)}
    lines = [f"# {title}", "", question, "",
             f"Command: `{command}`. Budget: {budget:,} optimiser steps per run; seeds {', '.join(map(str, seeds))}. "
             f"Values: val torso PCK@0.2 (%) at the end of the budget, mean +- std over the finished seeds; swap: "
             f"left/right pairs predicted crossed (%, lower is better); Δ: this row minus the reference row "
             f"({labels[reference]}), paired by seed, with its 95 % t-interval. Paper: COCO val AP of the same row "
             f"(another data set, model size and budget: the direction is comparable, not the value).", "",
             "| row | seeds | torso PCK@0.2 | Δ vs reference (95 % CI) | verdict | swap (%) | params (M) | ms/step "
             "| paper AP |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        runs = [r for r in results if r.row == row]
        pck = mean_std([r.value for r in runs])
        swap = mean_std([r.metrics["swap"] for r in runs if "swap" in r.metrics])
        params = f"{runs[0].params / 1e6:.3f}" if runs else "-"
        ms = _num(float(np.mean([r.ms_per_step for r in runs])), 0) if runs else "-"
        if row == reference:
            delta, verdict = "reference", ""
        else:
            c = comparisons[row]
            delta = "-" if c.mean is None else _num(c.mean, 1, sign=True) + (
                f" [{c.ci[0]:+.1f}, {c.ci[1]:+.1f}]" if c.ci else "")
            verdict = c.verdict
        lines.append(f"| {labels[row]} | {len(runs)} | {_pm(*pck)} | {delta} | {verdict} | {_pm(*swap)} | {params} "
                     f"| {ms} | {_num(paper.get(row))} |")
    lines += ["", "## Comparisons", ""]
    for c in comparisons.values():
        if c.mean is None:
            lines.append(f"- {labels[c.row]} vs {labels[c.reference]}: {c.verdict}.")
            continue
        ci = f", 95 % interval [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]" if c.ci else ""
        lines.append(f"- {labels[c.row]} vs {labels[c.reference]}: {c.mean:+.2f} points over {len(c.seeds)} paired "
                     f"seed(s) ({', '.join(f'{d:+.2f}' for d in c.diffs)}){ci}: **{c.verdict}**."
                     + (f" To separate them: {c.estimate}." if c.estimate else ""))
    joints = [k[len(JOINT_PREFIX):] for k in results[0].metrics if k.startswith(JOINT_PREFIX)] if results else []
    if joints:
        lines += ["", "## Per-joint torso PCK@0.2 (mean over seeds)", "",
                  "| row | " + " | ".join(joints) + " |", "|---|" + "---|" * len(joints)]
        for row in rows:
            runs = [r for r in results if r.row == row]
            if runs:
                lines.append(f"| {labels[row]} | " + " | ".join(
                    f"{np.mean([r.metrics.get(JOINT_PREFIX + j, float('nan')) for r in runs]):.1f}" for j in joints)
                    + " |")
    lines += ["", "## Not finished", ""]
    lines += [f"- {p}" for p in pending] if pending else ["Every requested run has finished."]
    lines += ["", "Learning curves: curves.png (mean over seeds, the band spans the lowest to the highest seed)."]
    return "\n".join(lines) + "\n"


def plot_curves(results: list[RunResult], rows: Sequence[str], labels: dict[str, str], path: Path, title: str
                ) -> dict[str, dict[str, np.ndarray]]:
    """Val torso PCK@0.2 and swap rate against optimiser steps: per row the mean over seeds, shaded from the
    lowest to the highest seed at each evaluation the seeds share. Returns what was drawn of the PCK panel:
    row -> ``{"steps", "mean", "low", "high"}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn: dict[str, dict[str, np.ndarray]] = {}
    for i, row in enumerate(rows):
        runs = [r for r in results if r.row == row]
        if not runs:
            continue
        shared = sorted(set.intersection(*({int(p["global_step"]) for p in r.curve} for r in runs)))
        for ax, key in zip(axes, (METRIC, "swap")):
            table = np.array([[next(p[key] for p in r.curve if int(p["global_step"]) == s) for s in shared]
                              for r in runs if all(key in p for p in r.curve)])
            if table.size == 0:
                continue
            color = f"C{i}"
            if key == METRIC:
                drawn[row] = {"steps": np.array(shared), "mean": table.mean(axis=0), "low": table.min(axis=0),
                              "high": table.max(axis=0)}
            ax.plot(shared, table.mean(axis=0), color=color, marker="o", ms=3,
                    label=f"{labels[row]} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
            if len(table) > 1:
                ax.fill_between(shared, table.min(axis=0), table.max(axis=0), color=color, alpha=0.2, lw=0)
    axes[0].set_ylabel("val torso PCK@0.2 (%)")
    axes[1].set_ylabel("left/right swap (%)")
    for ax in axes:
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn
