"""``dspose experiment TABLE``: run every row of a paper table and write our numbers beside the paper's.

A table is the set of ``experiments/*.yaml`` whose ``paper.table`` is TABLE (``coco``, ``table5``, ``table6``,
``table7``, ``table8``, ``mpii``, ``convs``). Each row is trained with its own config (the paper schedule by
default; ``--epochs`` shortens it, milestones scaled alike), then ``results.md`` and ``results.csv`` list the
row, its parameter count (ours and the paper's), the paper's metric and ours.
``--tiny`` swaps each row's preset for the CPU-sized ``*_t`` one (same head/conv/t/N overrides): a smoke
run of the whole table on a laptop, not a reproduction.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path
from typing import Any

import yaml

from dspose_graph.train.config import TrainConfig, apply_override, config_from_dict, config_to_dict, load_config
from dspose_graph.io import atomic_write_text

log = logging.getLogger(__name__)

HELP = "run the rows of a paper table (experiments/*.yaml) and write a results table beside the paper's numbers"
FIELDS = ["row", "config", "model", "params_m", "paper_params_m", "metric", "paper", "ours", "epochs", "data", "out_dir"]


def default_experiments_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "experiments"
    return here if here.is_dir() else Path("experiments")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table name (paper.table of the YAMLs), e.g. table7; 'list' lists them")
    parser.add_argument("--experiments", type=Path, default=None, help="folder of row YAMLs (default experiments/)")
    parser.add_argument("--epochs", type=int, default=None, help="train this many epochs (milestones scaled)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset root (COCO 2017 / coco_mini layout, or MPII root) replacing data.root")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N training and N held-out persons")
    parser.add_argument("--tiny", action="store_true", help="use the CPU-sized *_t presets (smoke run)")
    parser.add_argument("--out", type=Path, default=Path("runs/experiments"), help="output folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value in every row (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="only build each row's model and count parameters")


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


def scale_milestones(milestones: list[int], epochs: int, new_epochs: int) -> list[int]:
    """Milestones at the same fractions of a shorter (or longer) run; those that fall on 0 or the end are dropped."""
    return sorted({round(m * new_epochs / epochs) for m in milestones} - {0} - {new_epochs})


def prepare(config: TrainConfig, args: argparse.Namespace, out_dir: Path) -> TrainConfig:
    """The row's config with the command-line changes applied."""
    raw = config_to_dict(config)
    if args.epochs is not None:
        raw["optim"]["milestones"] = scale_milestones(config.optim.milestones, config.optim.epochs, args.epochs)
        raw["optim"]["epochs"] = args.epochs
    if args.data is not None:
        raw["data"].update(data_paths(config.data.kind, args.data))
    if args.limit:
        raw["data"]["limit_train"] = raw["data"]["limit_val"] = args.limit
    if args.tiny:
        base = config.model.name.rsplit("_", 1)[0]
        raw["model"]["name"] = f"{base}_t"
        if config.data.kind == "mpii":
            raw["model"]["overrides"].setdefault("schema", "mpii")
    raw["run"]["out_dir"] = str(out_dir)
    for item in args.overrides:
        raw = apply_override(raw, item)
    return config_from_dict(raw, source=f"{config.paper.table}/{config.paper.row}")


def data_paths(kind: str, root: Path) -> dict[str, str]:
    """The data.* path fields for a dataset root in one of the known layouts."""
    from dspose_graph.data.layouts import coco_paths, mpii_paths

    if kind == "coco":
        train_ann, train_images = coco_paths(root, "train")
        val_ann, val_images = coco_paths(root, "val")
        return {"root": "", "train_ann": str(train_ann), "train_images": str(train_images),
                "val_ann": str(val_ann), "val_images": str(val_images)}
    ann, images = mpii_paths(root)
    if ann is None:
        raise FileNotFoundError(f"no MPII annotation file under {root}")
    gt = next((p for p in (root / "annotations" / "detections_our_format.mat", root / "detections_our_format.mat")
               if p.is_file()), None)
    return {"root": "", "train_ann": str(ann), "train_images": str(images), "val_ann": str(ann),
            "val_images": str(images), "val_gt": str(gt) if gt else ""}


def our_value(config: TrainConfig, metrics: dict[str, float]) -> float | None:
    """The row's metric in the paper's units (AP in %, PCKh in %)."""
    if config.paper.metric == "AP":
        return 100.0 * metrics["AP"] if "AP" in metrics else None
    if config.paper.metric == "PCKh":
        return metrics.get("PCKh_Mean")
    return metrics.get(config.paper.metric)


def run(args: argparse.Namespace) -> int:
    tables = table_rows(args.experiments or default_experiments_dir())
    if args.table == "list":
        for name, rows in sorted(tables.items()):
            print(f"{name}: {', '.join(c.paper.row for _, c in rows)}")
        return 0
    if args.table not in tables:
        raise ValueError(f"unknown table {args.table!r}; valid: {', '.join(sorted(tables))}")
    from dspose_graph.cli.train import build_model, run_training
    from dspose_graph.train.distributed import cleanup

    out = args.out / args.table
    results = []
    for path, row in tables[args.table]:
        config = prepare(row, args, out / path.stem)
        result: dict[str, Any] = {"row": row.paper.row, "config": path.name, "model": config.model.name,
                                  "paper_params_m": row.paper.params_m, "metric": row.paper.metric,
                                  "paper": row.paper.value, "epochs": config.optim.epochs,
                                  "data": config.data.train_ann or config.data.root, "out_dir": config.run.out_dir}
        if args.dry_run:
            model = build_model(config)
            result.update(params_m=sum(p.numel() for p in model.parameters()) / 1e6, ours=None)
        else:
            log.info("table %s, row %s (%s)", args.table, row.paper.row, path.name)
            try:
                trained = run_training(config, source=str(path))
            finally:
                cleanup()
            result.update(params_m=trained["params"] / 1e6, ours=our_value(config, trained["metrics"]))
        results.append(result)
        write_results(out, args.table, results)
    print(render_markdown(args.table, results))
    print(f"\nwrote {out / 'results.md'} and {out / 'results.csv'}")
    return 0


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or v == "":
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_markdown(table: str, results: list[dict[str, Any]]) -> str:
    lines = [f"# Results: {table}", "",
             "| row | model | params (M) ours | params (M) paper | metric | paper | ours | epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['row']} | {r['model']} | {_fmt(r['params_m'], 2)} | {_fmt(r['paper_params_m'])} | "
                     f"{r['metric']} | {_fmt(r['paper'])} | {_fmt(r['ours'])} | {r['epochs']} |")
    lines += ["", "Paper values of '-' are not transcribed in the YAML (see its header comment). 'ours' is "
              "measured by this run on the data named in results.csv; short or --tiny runs are smoke tests, "
              "not reproductions."]
    return "\n".join(lines) + "\n"


def write_results(out: Path, table: str, results: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS})
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.md", render_markdown(table, results))
    atomic_write_text(out / "rows.yaml", yaml.safe_dump([{k: r.get(k) for k in FIELDS} for r in results],
                                                        sort_keys=False))
