"""``dspose experiment TABLE``: the CLI of ``dspose_graph.train.experiment`` (paper tables, ours beside the paper's)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dspose_graph.io import check_output_dir
from dspose_graph.train.experiment import default_experiments_dir, render_markdown, run_table, table_rows

HELP = "run the rows of a paper table (experiments/*.yaml) and write a results table beside the paper's numbers"


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


def run(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: must be >= 1")
    if args.limit < 0:
        raise ValueError(f"--limit {args.limit}: must be >= 0 (0 = every person)")
    if args.data is not None and not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such folder (a COCO 2017 / coco_mini or MPII root)")
    check_output_dir(args.out)
    tables = table_rows(args.experiments or default_experiments_dir())
    if args.table == "list":
        for name, rows in sorted(tables.items()):
            print(f"{name}: {', '.join(c.paper.row for _, c in rows)}")
        return 0
    if args.table not in tables:
        raise ValueError(f"unknown table {args.table!r}; valid: {', '.join(sorted(tables))}")
    out = args.out / args.table
    results = run_table(args.table, tables[args.table], out, dry_run=args.dry_run, epochs=args.epochs,
                        data=args.data, limit=args.limit, tiny=args.tiny, overrides=args.overrides)
    if os.environ.get("RANK", "0") == "0":  # under torchrun every process runs this command; rank 0 reports
        print(render_markdown(args.table, results))
        print(f"\nwrote {out / 'results.md'} and {out / 'results.csv'}")
    return 0
