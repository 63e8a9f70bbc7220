"""``dspose experiment TABLE``: the CLI of ``dspose_graph.train.experiment`` (paper tables, ours beside the paper's)
and of ``dspose_graph.train.ablation`` (the ``lsp-*`` ablations: rows x seeds on LSPET with error bars)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from dspose_graph.io import check_output_dir
from dspose_graph.process import is_main_rank
from dspose_graph.train.ablation import ABLATIONS, recipe_path, run_ablation
from dspose_graph.train.experiment import (default_experiments_dir, format_table_list, paper_table, render_markdown,
                                           run_table)

HELP = ("run the rows of a paper table (experiments/*.yaml) and write a results table beside the paper's numbers; "
        "lsp-table5, lsp-convs, lsp-table7, lsp-table8: the ablations on LSPET, seeds x rows with error bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table name (paper.table of the YAMLs), e.g. table7; 'list' lists them")
    parser.add_argument("--experiments", type=Path, default=None, help="folder of row YAMLs (default experiments/)")
    parser.add_argument("--epochs", type=int, default=None, help="train this many epochs (milestones scaled)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset root (COCO 2017 / coco_mini layout, MPII root, or for lsp-* the LSPET folder) "
                             "replacing data.root")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N training and N held-out persons")
    parser.add_argument("--tiny", action="store_true", help="use the CPU-sized *_t presets (smoke run)")
    parser.add_argument("--out", type=Path, default=Path("runs/experiments"), help="output folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value in every row (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="only build each row's model and count parameters")
    lsp = parser.add_argument_group("lsp-* ablations (docs/ablations.md)")
    lsp.add_argument("--seeds", type=_int_list, default=None, metavar="0,1,2", help="seeds per row (default 0,1,2)")
    lsp.add_argument("--steps", type=int, default=None,
                     help="budget per run in optimiser steps (default: experiments/lsp/ablation.yaml, 3000)")
    lsp.add_argument("--rows", type=_name_list, default=None, metavar="mlp,dual", help="only these rows (default all)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers separated by commas, e.g. 0,1,2") from None


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _as_given(args: argparse.Namespace) -> list[str]:
    """The ablation's options as a command line (for the report): the table and each option given."""
    words = [args.table]
    for option, value in (("--rows", ",".join(args.rows or [])), ("--seeds", ",".join(map(str, args.seeds or []))),
                          ("--steps", args.steps), ("--data", args.data), ("--limit", args.limit or None),
                          ("--out", args.out if args.out != Path("runs/experiments") else None)):
        if value not in (None, ""):
            words += [option, str(value)]
    for item in args.overrides:
        words += ["--set", item]
    return words


def run_lsp(args: argparse.Namespace) -> int:
    """``dspose experiment lsp-*``: the ablation's runs under --out/<name>, its report printed at the end."""
    for option, value in (("--epochs", args.epochs), ("--tiny", args.tiny or None)):
        if value is not None:
            raise ValueError(f"{option} is for the paper tables; {args.table} has a step budget (--steps)")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: must be >= 1")
    out = args.out / args.table
    command = "dspose experiment " + shlex.join(_as_given(args))
    result = run_ablation(args.table, out, seeds=args.seeds or [0, 1, 2], steps=args.steps, rows=args.rows,
                          data=args.data, limit=args.limit, overrides=args.overrides, dry_run=args.dry_run,
                          recipe=recipe_path(args.experiments), command=command)
    if args.dry_run:
        for row, params in result:
            print(f"{args.table} {row}: {params / 1e6:.3f}M trainable parameters")
        return 0
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.md'}, {out / 'results.csv'} and {out / 'curves.png'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: must be >= 1")
    if args.limit < 0:
        raise ValueError(f"--limit {args.limit}: must be >= 0 (0 = every person)")
    if args.data is not None and not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such folder (a COCO 2017 / coco_mini or MPII root)")
    check_output_dir(args.out)
    if args.table in ABLATIONS:
        return run_lsp(args)
    for option, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--rows", args.rows)):
        if value is not None:
            raise ValueError(f"{option} is for the lsp-* ablations ({', '.join(ABLATIONS)}), not {args.table}")
    if args.table == "list":
        print(format_table_list(args.experiments or default_experiments_dir()))
        return 0
    rows = paper_table(args.table, args.experiments or default_experiments_dir())
    out = args.out / args.table
    results = run_table(args.table, rows, out, dry_run=args.dry_run, epochs=args.epochs,
                        data=args.data, limit=args.limit, tiny=args.tiny, overrides=args.overrides)
    if is_main_rank():  # under torchrun every process runs this command; rank 0 reports
        print(render_markdown(args.table, results))
        print(f"\nwrote {out / 'results.md'} and {out / 'results.csv'}")
    return 0
