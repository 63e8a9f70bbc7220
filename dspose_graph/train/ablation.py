"""The paper's ablations at CPU scale on LSPET: every row x seed trained for the same step budget, then a table with
error bars and a paired comparison against a reference row (:mod:`dspose_graph.train.ablation_report`).

An ablation (:data:`ABLATIONS`) is a set of rows that differ only in ``model.overrides`` (the head, the graph
convolution, top-t or the head's layers); each row is trained once per seed from the shared recipe
``experiments/lsp/ablation.yaml`` with ``optim.max_steps`` as the budget. Runs live in
``OUT/<row>/seed<k>/`` (the trainer's checkpoints and logs) and are done seed by seed across the rows, so an
interrupted experiment has paired seeds to compare. After each run ``OUT/results.md``, ``results.csv`` and
``curves.png`` are rewritten from every finished run in ``OUT`` (runs of one row made by separate commands add
up); a run that was stopped is resumed from its ``last.pt`` by the next command (the trainer's exact resume), and a
finished one is read, not trained again. ``dspose experiment lsp-table5`` is the command line of
:func:`run_ablation`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import yaml

from dspose_graph.io import atomic_write_json, atomic_write_text
from dspose_graph.process import is_main_rank
from dspose_graph.train.ablation_report import METRIC, RunResult, plot_curves, render_markdown
from dspose_graph.train.config import (TrainConfig, apply_override, check_override, config_from_dict, config_to_dict,
                                      load_config)

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
RESUMES_FILE = "resumed_at.json"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: its name (``--rows``, folder), label, model overrides and the paper row's YAML in experiments/."""

    name: str
    label: str
    overrides: dict[str, Any]
    paper_yaml: str | None = None


@dataclasses.dataclass(frozen=True)
class Ablation:
    name: str
    title: str
    question: str
    reference: str
    rows: tuple[Row, ...]

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise ValueError(f"{self.name} has no row {name!r}; valid: {', '.join(r.name for r in self.rows)}")


_CONVS = ("dspose", "gcn", "gat", "gatv2", "graphconv", "sage", "transformer")
ABLATIONS: dict[str, Ablation] = {a.name: a for a in (
    Ablation("lsp-table5", "Heads on LSPET (the paper's Table 5)",
             "Does a graph head beat TokenPose's MLP head on the same body? Same backbone, Transformer, recipe and "
             "step budget; only the head differs.", "mlp",
             (Row("mlp", "MLP (TokenPose)", {"head": "mlp"}, "table5_mlp.yaml"),
              Row("feature", "Feature-A graph", {"head": "feature"}, "table5_feature.yaml"),
              Row("physical", "Physical-A graph", {"head": "physical"}),
              Row("dual", "Feature-A + Physical-A (DSPose)", {"head": "dual"}, "table5_dual.yaml"))),
    Ablation("lsp-convs", "Graph convolutions in the dual head on LSPET",
             "Does the paper's dual-space convolution beat PyG's standard ones inside the same dual head?", "dspose",
             tuple(Row(c, "paper (Eq. 9)" if c == "dspose" else c, {"conv": c}, f"convs_{c}.yaml") for c in _CONVS)),
    Ablation("lsp-table7", "Top-t of the feature graph on LSPET (the paper's Table 7)",
             "How many feature-space neighbours t should each keypoint keep (dual head)?", "t4",
             tuple(Row(f"t{t}", f"t={t}", {"t": t}, f"table7_t{t}.yaml") for t in (3, 4, 5, 6, 8, 10))),
    Ablation("lsp-table8", "Graph layers N of the dual head on LSPET (the paper's Table 8)",
             "How many graph layers should the dual head have?", "n2",
             tuple(Row(f"n{n}", f"N={n}", {"head_layers": n}, f"table8_n{n}.yaml") for n in (1, 2, 3))),
)}


def recipe_path(experiments: Path | None = None) -> Path:
    """The shared recipe ``lsp/ablation.yaml`` of the experiments folder ``experiments`` (default: the checkout's)."""
    from dspose_graph.train.experiment import default_experiments_dir

    return (experiments or default_experiments_dir()) / "lsp" / "ablation.yaml"


def lspet_root(data: Path) -> Path:
    """The LSPET folder (``joints.mat`` + ``images/``) given it or a data folder holding ``lspet/``."""
    for candidate in (data, data / "lspet"):
        if (candidate / "joints.mat").is_file():
            return candidate
    raise FileNotFoundError(f"--data {data}: neither it nor {data / 'lspet'} holds LSPET's joints.mat")


def prepare_run(recipe: TrainConfig, ablation: Ablation, row: Row, seed: int, out: Path, *, steps: int | None = None,
                data: Path | None = None, limit: int = 0, overrides: Sequence[str] = ()) -> TrainConfig:
    """The recipe with the row's model overrides, the seed, the budget, a data root, ``limit`` persons per split
    and ``--set`` overrides; a ``--set`` of the key the rows vary is refused (every row would be the same)."""
    raw = config_to_dict(recipe)
    raw["model"]["overrides"] = {**raw["model"]["overrides"], **row.overrides}
    raw["run"]["seed"] = seed
    raw["run"]["out_dir"] = str(out / row.name / f"seed{seed}")
    if steps is not None:
        raw["optim"]["max_steps"] = steps
    # The budget is the steps; epochs only bound them (each epoch has at least one step, on any process count).
    raw["optim"]["epochs"] = max(raw["optim"]["max_steps"], 1)
    if data is not None:
        raw["data"]["root"] = str(lspet_root(data))
    if limit:
        raw["data"]["limit_train"] = raw["data"]["limit_val"] = limit
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in {f"model.overrides.{k}" for k in row.overrides} | {"run.seed", "run.out_dir", "optim.max_steps"}:
            raise ValueError(f"--set {item}: {key} is what {ablation.name} sets per row/seed (use --rows, --seeds, "
                             f"--steps, --out)")
        raw = apply_override(raw, item)
    raw["paper"] = {"table": ablation.name, "row": row.name, "metric": METRIC, "value": None, "params_m": None}
    config = config_from_dict(raw, source=f"{ablation.name}, row {row.name}, seed {seed}")
    if config.data.kind != "lspet":
        raise ValueError(f"{ablation.name}: data.kind = {config.data.kind!r}; the LSP ablations train on lspet")
    if config.optim.max_steps < 1:
        raise ValueError(f"{ablation.name}: optim.max_steps = {config.optim.max_steps}: the budget must be >= 1 step")
    return config


# Keys that may change between commands on one run folder: the budget (a longer one continues the run).
_BUDGET_KEYS = {"optim.max_steps", "optim.epochs"}


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_folder(config: TrainConfig) -> str:
    """``"fresh"``, ``"resume"`` (a ``last.pt`` to continue), ``"done"`` (finished at this budget) or
    ``"extend"`` (finished at a smaller budget: continued). ``ValueError`` naming the folder when it was run with
    other settings or a larger budget."""
    folder = Path(config.run.out_dir)
    saved = folder / "config.yaml"
    if saved.is_file():
        old, new = _flatten(yaml.safe_load(saved.read_text()) or {}), _flatten(config_to_dict(config))
        for key in sorted(set(old) | set(new)):
            if key not in _BUDGET_KEYS and key != "paper.value" and old.get(key) != new.get(key):
                raise ValueError(f"{folder}: this run was made with {key} = {old.get(key)!r}, this command asks "
                                 f"{new.get(key)!r}; use another --out (or delete the folder to start it again)")
    result = folder / RESULT_FILE
    if result.is_file():
        steps = int(json.loads(result.read_text())["steps"])
        if steps == config.optim.max_steps:
            return "done"
        if steps > config.optim.max_steps:
            raise ValueError(f"{result}: this run finished {steps} steps, more than the budget "
                             f"{config.optim.max_steps} asked; use --steps {steps} or another --out")
        return "extend"
    return "resume" if (folder / "last.pt").is_file() else "fresh"


def load_result(path: Path) -> RunResult:
    return RunResult(**json.loads(path.read_text()))


def _ms_per_step(history: list[dict[str, Any]]) -> float:
    """Median over epochs of training seconds per step (evaluation not counted)."""
    import numpy as np

    rates, before = [], 0
    for row in history:
        steps = int(row["global_step"]) - before
        before = int(row["global_step"])
        if steps > 0:
            rates.append(1000.0 * float(row["seconds"]) / steps)
    return float(np.median(rates)) if rates else float("nan")


def run_one(config: TrainConfig, row: Row, source: str) -> RunResult:
    """Train (or resume, or read) one row x seed; writes ``result.json`` in its folder when it finishes."""
    from dspose_graph.models.checkpoint import load_checkpoint
    from dspose_graph.train.pipeline import train

    folder = Path(config.run.out_dir)
    state = check_folder(config)
    if state == "done":
        log.info("%s: finished earlier at %d steps, read", folder, config.optim.max_steps)
        return load_result(folder / RESULT_FILE)
    resumes_path = folder / RESUMES_FILE
    resumed_at = json.loads(resumes_path.read_text()) if resumes_path.is_file() and state != "fresh" else []
    resume = None
    if state in ("resume", "extend"):
        resume = folder / "last.pt"
        step = int(load_checkpoint(resume, map_location="cpu").get("global_step", 0))
        log.info("%s: resuming from %s at global step %d", folder, resume, step)
        resumed_at.append(step)
        if is_main_rank():
            atomic_write_json(resumes_path, resumed_at)
    trained = train(config, resume=resume, source=source)
    curve = [{"global_step": int(h["global_step"]), METRIC: float(h[METRIC]), "swap": float(h.get("swap", "nan")),
              "train_loss": float(h["train_loss"])} for h in trained.history if METRIC in h]
    result = RunResult(row=row.name, seed=config.run.seed, steps=trained.global_step, params=trained.params,
                       ms_per_step=_ms_per_step(trained.history),
                       metrics={k: float(v) for k, v in trained.metrics.items() if isinstance(v, (int, float))},
                       curve=curve, resumed_at=resumed_at, finished=datetime.date.today().isoformat())
    if trained.is_main:
        atomic_write_json(folder / RESULT_FILE, dataclasses.asdict(result))
    return result


def paper_values(ablation: Ablation) -> dict[str, float | None]:
    """Each row's paper number (COCO val AP) from its experiments/*.yaml; ``None`` where the paper has none."""
    from dspose_graph.train.experiment import default_experiments_dir

    values: dict[str, float | None] = {}
    for row in ablation.rows:
        path = default_experiments_dir() / row.paper_yaml if row.paper_yaml else None
        values[row.name] = load_config(path).paper.value if path is not None and path.is_file() else None
    return values


def collect(ablation: Ablation, out: Path, budget: int) -> tuple[list[RunResult], list[str]]:
    """The finished runs under ``out`` at ``budget`` steps, and a line for each run folder that is not one."""
    results, other = [], []
    for row in ablation.rows:
        for folder in sorted((out / row.name).glob("seed*")):
            path = folder / RESULT_FILE
            if path.is_file():
                result = load_result(path)
                if result.steps == budget:
                    results.append(result)
                    continue
                other.append(f"{row.name} {folder.name}: finished at {result.steps:,} steps, not this budget")
            elif (folder / "last.pt").is_file():
                other.append(f"{row.name} {folder.name}: stopped, resumable (rerun the command)")
    results.sort(key=lambda r: ([x.name for x in ablation.rows].index(r.row), r.seed))
    return results, other


def write_report(ablation: Ablation, out: Path, budget: int, seeds: Sequence[int], requested: list[tuple[str, int]],
                 command: str) -> list[RunResult]:
    """``results.md``, ``results.csv`` and ``curves.png`` under ``out`` from every finished run there."""
    results, other = collect(ablation, out, budget)
    finished = {(r.row, r.seed) for r in results}
    pending = [f"{row} seed{seed}: not run yet" for row, seed in requested if (row, seed) not in finished
               and not (out / row / f"seed{seed}" / "last.pt").is_file()] + other
    shown = [r.name for r in ablation.rows if any(x.row == r.name for x in results)
             or any(name == r.name for name, _ in requested)]
    if ablation.reference not in shown:
        shown.insert(0, ablation.reference)
    labels = {r.name: r.label for r in ablation.rows}
    text = render_markdown(ablation.title, ablation.question, shown, ablation.reference, results, labels,
                           paper_values(ablation), budget, seeds, command, pending)
    atomic_write_text(out / "results.md", text)
    joints = [k for k in (results[0].metrics if results else {}) if k.startswith(METRIC + "/")]
    fields = ["row", "seed", "steps", "params", "ms_per_step", METRIC, "swap", *joints, "resumed_at", "finished"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in results:
        writer.writerow({"row": r.row, "seed": r.seed, "steps": r.steps, "params": r.params,
                         "ms_per_step": round(r.ms_per_step, 2), **{k: r.metrics.get(k, "") for k in fields[5:-2]},
                         "resumed_at": " ".join(map(str, r.resumed_at)), "finished": r.finished})
    atomic_write_text(out / "results.csv", buf.getvalue())
    if results:
        plot_curves(results, shown, labels, out / "curves.png", f"{ablation.title}: {budget:,} steps per run")
    return results


def pin_precision(configs: dict[tuple[str, int], TrainConfig], out: Path) -> None:
    """One precision for every run of a table: ``auto`` (``optim.precision``, ``eval.precision``) is resolved
    once, or taken from a run already in ``out``, so that no row trains in bf16 and another in fp32 because a
    measurement of the CPU's bf16 speed came out differently under other load."""
    first = next(iter(configs.values()))
    if first.optim.precision != "auto" and first.eval.precision != "auto":
        return
    saved = next(iter(sorted(out.glob("*/seed*/config.yaml"))), None)
    if saved is not None:
        raw = yaml.safe_load(saved.read_text()) or {}
        train, evaluation = raw["optim"]["precision"], raw["eval"]["precision"]
        why = f"as the runs already made ({saved})"
    else:
        from dspose_graph.models.runtime import resolve_precision
        from dspose_graph.train.distributed import resolve_device

        train, why = resolve_precision("auto", resolve_device(first.run.device))
        evaluation = train
    log.info("precision of every run: optim.precision %s, eval.precision %s (%s)", train, evaluation, why)
    for config in configs.values():
        if config.optim.precision == "auto":
            config.optim.precision = train
        if config.eval.precision == "auto":
            config.eval.precision = evaluation


def run_ablation(name: str, out: Path, *, seeds: Sequence[int] = (0, 1, 2), steps: int | None = None,
                 rows: Sequence[str] | None = None, data: Path | None = None, limit: int = 0,
                 overrides: Sequence[str] = (), dry_run: bool = False, recipe: Path | None = None,
                 command: str = "") -> list[RunResult] | list[tuple[str, int]]:
    """Train every ``rows`` x ``seeds`` run of ablation ``name`` under ``out`` (seed by seed), rewriting the report
    after each; ``dry_run`` only builds each row's model and returns ``(row, trainable parameters)``."""
    from dspose_graph.models.complexity import count_parameters
    from dspose_graph.train.pipeline import build_model

    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; valid: {', '.join(ABLATIONS)}")
    ablation = ABLATIONS[name]
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds {','.join(map(str, seeds))}: give distinct seeds >= 0, e.g. 0,1,2")
    selected = [ablation.row(r) for r in rows] if rows else list(ablation.rows)
    for item in overrides:
        check_override(item)
    base = load_config(recipe or recipe_path())
    # Every run is prepared and its folder checked before the first one trains: a bad one stops the table at once.
    configs = {(row.name, seed): prepare_run(base, ablation, row, seed, out, steps=steps, data=data, limit=limit,
                                             overrides=overrides) for seed in seeds for row in selected}
    if dry_run:
        return [(row.name, count_parameters(build_model(configs[row.name, seeds[0]], load_pretrained=False))[0])
                for row in selected]
    pin_precision(configs, out)
    for config in configs.values():
        check_folder(config)
    budget = next(iter(configs.values())).optim.max_steps
    requested = list(configs)
    command = command or f"dspose experiment {name}"
    for (row_name, seed), config in configs.items():
        log.info("%s: row %s, seed %d (%d steps) in %s", name, row_name, seed, budget, config.run.out_dir)
        try:
            run_one(config, ablation.row(row_name), source=f"{recipe or recipe_path()} ({name}, {row_name})")
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: say how to go on (run_guarded prints the hint)
            raise type(e)(f"finished runs are kept, {row_name} seed {seed} resumes from its last.pt: "
                          f"run `{command}` again") from e
        if is_main_rank():
            write_report(ablation, out, budget, seeds, requested, command)
    return collect(ablation, out, budget)[0]
