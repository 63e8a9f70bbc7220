"""``dspose train CONFIG.yaml [--resume CKPT|auto] [--init-from WEIGHTS] [--set k=v ...] [--eval-only | --dry-run]``: the CLI of ``dspose_graph.train.pipeline``.

Under ``torchrun`` every process runs this same command (see docs/training.md); rank 0 prints the metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from dspose_graph.process import is_main_rank
from dspose_graph.train.config import load_config
from dspose_graph.train.pipeline import dry_run, evaluate, train
from dspose_graph.train.run_folder import resume_hint


HELP = "train a model from a YAML config (single process or under torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config (see experiments/ and docs/training.md)")
    parser.add_argument("--resume", default=None, metavar="CKPT|auto",
                        help="checkpoint to resume from (e.g. OUT/last.pt), or 'auto': run.out_dir's newest checkpoint "
                             "when it has one, else a new run (the same command restarts a preempted job); with "
                             "--eval-only, the weights to evaluate (a path or a shipped weight name)")
    parser.add_argument("--init-from", default=None, metavar="WEIGHTS",
                        help="start from these weights (a path or a shipped weight name): sets model.init_from")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=5e-4 (repeatable)")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate (the --resume checkpoint's weights) and write metrics_eval.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the model (with its pretrained backbone), datasets and evaluator, read one sample "
                             "of each split, print a summary and stop before training; writes nothing")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.init_from:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, init_from=args.init_from))
    if args.eval_only and args.resume in (None, "auto"):
        raise ValueError("--eval-only needs --resume CHECKPOINT (the weights to evaluate; not 'auto')")
    if args.dry_run:
        if args.eval_only or args.resume is not None:
            raise ValueError("--dry-run checks a training config: it takes neither --eval-only nor --resume")
        summary = dry_run(config)
        if is_main_rank():
            print(json.dumps(summary, indent=1))
        return 0
    # A non-finite loss (NonFiniteLossError, a RuntimeError) ends in the entry guard: one line, exit status 4.
    if args.eval_only:
        metrics = evaluate(config, args.resume, source=str(args.config))
    else:
        try:
            metrics = train(config, resume=args.resume, source=str(args.config)).metrics
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: say where the run stands and how it goes on
            raise type(e)(resume_hint(config.run.out_dir, args.config, args.overrides)) from None
    if is_main_rank():
        print(json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=1))
    return 0
