"""Paper tables as experiments: run every row of a table and write our numbers beside the paper's.

A table is the set of ``experiments/*.yaml`` whose ``paper.table`` is TABLE (``coco``, ``table5``, ``table6``,
``table7``, ``table8``, ``mpii``, ``convs``). Each row is trained with its own config by
:func:`dspose_graph.train.pipeline.train` (the paper schedule by default; ``epochs`` shortens it,
milestones scaled alike), then ``results.md``, ``results.csv`` and ``rows.yaml`` list the row, its
trainable parameter count (ours and the paper's: the papers count trainable weights, so the frozen sine
position table is left out), the paper's metric and ours. ``tiny`` swaps each row's preset for the
CPU-sized ``*_t`` one (same head/conv/t/N overrides): a smoke run of a whole table, not a reproduction.
``dspose experiment`` is the command line of :func:`run_table`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import yaml

from dspose_graph.io import atomic_write_text
from dspose_graph.train.config import (TrainConfig, apply_override, check_override, config_from_dict, config_to_dict,
                                      load_config)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RowResult:
    """One row of a results table; ``params_m`` is our trainable parameter count in millions."""

    row: str
    config: str
    model: str
    params_m: float
    paper_params_m: float | None
    metric: str
    paper: float | None
    ours: float | None
    epochs: int
    data: str
    out_dir: str


FIELDS = [f.name for f in dataclasses.fields(RowResult)]


def default_experiments_dir() -> Path:
    """The source checkout's ``experiments/`` folder, else ``./experiments``."""
    here = Path(__file__).resolve().parents[2] / "experiments"
    return here if here.is_dir() else Path("experiments")


def table_rows(directory: Path) -> dict[str, list[tuple[Path, TrainConfig]]]:
    """Table name -> its rows ``(yaml path, config)``, in file-name order."""
    if not directory.is_dir():
        raise FileNotFoundError(f"experiments folder {directory} does not exist")
    tables: dict[str, list[tuple[Path, TrainConfig]]] = {}
    for path in sorted(directory.glob("*.yaml")):
        config = load_config(path)
        if not config.paper.table:
            raise ValueError(f"{path}: paper.table is empty: every experiment YAML names its table")
        tables.setdefault(config.paper.table, []).append((path, config))
    return tables


def paper_table(name: str, directory: Path) -> list[tuple[Path, TrainConfig]]:
    """The rows of paper table ``name`` among the row YAMLs in ``directory``; ``ValueError`` naming every valid
    table (the ablations on LSPET too) for an unknown one."""
    from dspose_graph.train.ablation import ABLATIONS

    tables = table_rows(directory)
    if name not in tables:
        raise ValueError(f"unknown table {name!r}; valid: {', '.join([*sorted(tables), *ABLATIONS])}")
    return tables[name]


def format_table_list(directory: Path) -> str:
    """Every table ``dspose experiment`` runs, one a line with its rows: the paper tables of the row YAMLs in
    ``directory``, then the ablations on LSPET with their reference row."""
    from dspose_graph.train.ablation import ABLATIONS

    tables = sorted(table_rows(directory).items())
    lines = [f"{name}: {', '.join(c.paper.row for _, c in rows)}" for name, rows in tables]
    lines += [f"{name}: {', '.join(r.name for r in ablation.rows)} (LSPET, reference {ablation.reference})"
              for name, ablation in ABLATIONS.items()]
    return "\n".join(lines)


def scale_milestones(milestones: list[int], epochs: int, new_epochs: int) -> list[int]:
    """Milestones at the same fractions of a shorter (or longer) run; those that fall on 0 or the end are dropped."""
    return sorted({round(m * new_epochs / epochs) for m in milestones} - {0} - {new_epochs})


def prepare(config: TrainConfig, out_dir: Path, *, epochs: int | None = None, data: Path | None = None,
            limit: int = 0, tiny: bool = False, overrides: Sequence[str] = ()) -> TrainConfig:
    """The row's config with these changes: ``epochs`` (milestones scaled), a ``data`` root in a known
    layout, the first ``limit`` training and held-out persons, the ``*_t`` preset, ``--set`` overrides."""
    raw = config_to_dict(config)
    if epochs is not None:
        raw["optim"]["milestones"] = scale_milestones(config.optim.milestones, config.optim.epochs, epochs)
        raw["optim"]["epochs"] = epochs
    if data is not None:
        raw["data"].update(data_paths(config.data.kind, data))
    if limit:
        raw["data"]["limit_train"] = raw["data"]["limit_val"] = limit
    if tiny:
        base = config.model.name.rsplit("_", 1)[0]
        raw["model"]["name"] = f"{base}_t"
        raw["model"]["pretrained"] = None  # the ImageNet HRNet file is for the row's W32/W48 backbone
        from dspose_graph.data.layouts import dataset_kind

        schema = dataset_kind(config.data.kind, "config data.kind").schema
        if schema is not None:
            raw["model"]["overrides"].setdefault("schema", schema)
    raw["run"]["out_dir"] = str(out_dir)
    for item in overrides:
        raw = apply_override(raw, item)
    return config_from_dict(raw, source=f"{config.paper.table}/{config.paper.row}")


def data_paths(kind: str, root: Path) -> dict[str, str]:
    """The data.* path fields for a dataset root in its kind's release layout (COCO: with HRNet's person
    detections when the root has them, else ground-truth boxes)."""
    from dspose_graph.data.layouts import dataset_kind

    return {"root": "", **dataset_kind(kind, "config data.kind").config_paths(root)}


def our_value(config: TrainConfig, metrics: dict[str, float]) -> float | None:
    """The row's metric in the paper's units (AP in %, PCKh in %)."""
    if config.paper.metric == "AP":
        return 100.0 * metrics["AP"] if "AP" in metrics else None
    if config.paper.metric == "PCKh":
        return metrics.get("PCKh_Mean")
    return metrics.get(config.paper.metric)


def run_table(table: str, rows: list[tuple[Path, TrainConfig]], out: Path, *, dry_run: bool = False,
              **changes: Any) -> list[RowResult]:
    """Train (or, with ``dry_run``, only build) every row; results are rewritten under ``out`` after each row.

    ``changes`` are :func:`prepare`'s keyword arguments, applied to every row.
    """
    from dspose_graph.models.complexity import count_parameters
    from dspose_graph.train.distributed import on_main, process_group
    from dspose_graph.train.pipeline import build_model, train

    for item in changes.get("overrides", ()):
        check_override(item)
    # Every row is prepared (and so checked) before the first one trains: a bad row stops the table at once.
    configs = [(path, row, prepare(row, out / path.stem, **changes)) for path, row in rows]
    results: list[RowResult] = []
    if dry_run:
        for path, row, config in configs:
            params = count_parameters(build_model(config, load_pretrained=False))[0]
            results.append(_row_result(path, row, config, params, None))
            write_results(out, table, results)
        return results
    # One process group for all rows: under torchrun a process joins it once (a second join after leaving hangs).
    first = configs[0][2].run if configs else None
    with process_group(first.device if first else "cpu", first.dist_timeout if first else 10.0) as info:
        for path, row, config in configs:
            log.info("table %s, row %s (%s)", table, row.paper.row, path.name)
            trained = train(config, source=str(path))
            results.append(_row_result(path, row, config, trained.params, our_value(config, trained.metrics)))
            on_main(lambda: write_results(out, table, results), info, f"writing {out / 'results.csv'}")
    return results


def _row_result(path: Path, row: TrainConfig, config: TrainConfig, params: int, ours: float | None) -> RowResult:
    return RowResult(row=row.paper.row, config=path.name, model=config.model.name, params_m=params / 1e6,
                     paper_params_m=row.paper.params_m, metric=row.paper.metric, paper=row.paper.value, ours=ours,
                     epochs=config.optim.epochs, data=config.data.train_ann or config.data.root,
                     out_dir=config.run.out_dir)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or v == "":
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_markdown(table: str, results: list[RowResult]) -> str:
    """The results table in Markdown, paper numbers beside ours."""
    lines = [f"# Results: {table}", "",
             "| row | model | trainable params (M) ours | params (M) paper | metric | paper | ours | epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.row} | {r.model} | {_fmt(r.params_m, 2)} | {_fmt(r.paper_params_m)} | "
                     f"{r.metric} | {_fmt(r.paper)} | {_fmt(r.ours)} | {r.epochs} |")
    lines += ["", "Parameter counts are trainable weights (the frozen sine position table is not counted, as in "
              "the papers). Paper values of '-' are not transcribed in the YAML (see its header comment). 'ours' is "
              "measured by this run on the data named in results.csv; short or --tiny runs are smoke tests, "
              "not reproductions."]
    return "\n".join(lines) + "\n"


def write_results(out: Path, table: str, results: list[RowResult]) -> None:
    """``results.csv``, ``results.md`` and ``rows.yaml`` under ``out`` (each written atomically)."""
    rows = [dataclasses.asdict(r) for r in results]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in FIELDS})
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.md", render_markdown(table, results))
    atomic_write_text(out / "rows.yaml", yaml.safe_dump(rows, sort_keys=False))
