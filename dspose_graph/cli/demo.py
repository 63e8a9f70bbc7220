"""``dspose demo --out runs/demo``: the project's main job, end to end on a laptop CPU in minutes.

The steps (data, topology, training, held-out evaluation against baselines, report) are :mod:`dspose_graph.demo`;
this module only parses the options and prints the outcome.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dspose_graph.demo import DemoOptions, run_demo
from dspose_graph.demo.baselines import metric_table
from dspose_graph.demo.data import settings_text as _defaults
from dspose_graph.io import check_output_dir

HELP = "train a small DSPose for a few minutes and report held-out metrics against baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    parser.add_argument("--data", default=os.environ.get("DATA") or None,
                        help="a COCO-format dataset root (annotations/person_keypoints_{train,val}[2017].json "
                             "+ images) or 'synthetic'; default $DATA, else LSP Extended from the shared data "
                             "folder when present, else generated people")
    parser.add_argument("--model", default="dspose_t", help="model preset (default dspose_t; tokenpose_t has no graph)")
    parser.add_argument("--conv", default=None,
                        help="graph convolution of the graph head (dspose, gcn, gat, gatv2, graphconv, sage, transformer; "
                             "default graphconv on generated people, the paper's dspose on real data)")
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"training time budget in minutes (default {_defaults('minutes')})")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training budget in optimiser steps (default {_defaults('steps')}; the expected time "
                             "is printed before training)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs, unless the time budget ends first (default {_defaults('epochs')})")
    parser.add_argument("--sigma", type=float, default=3.0,
                        help="target Gaussian sigma in heatmap pixels (default 3 on the 24x32 maps: wider blobs "
                             "leave the all-zero plateau sooner in a few-minute run)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None, help=f"Adam lr (default {_defaults('lr')})")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random scale/rotation/flip crops on real data (default on); generated people are "
                             "never flipped (their side colours would contradict the swapped labels)")
    parser.add_argument("--train-images", type=int, default=1200, help="generated training images")
    parser.add_argument("--val-images", type=int, default=150, help="generated held-out images")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch compute threads (default 1: with one loader process that fills two cores, "
                             "and stays fast when other jobs share the machine)")
    parser.add_argument("--init", default="auto",
                        help="starting weights: 'auto' (the shipped weights for real data; their backbone and "
                             "Transformer with a fresh graph head for generated people), 'random', a shipped weight name or a checkpoint path")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    options = DemoOptions(**{f: getattr(args, f) for f in DemoOptions.__dataclass_fields__})
    options.out = check_output_dir(args.out)  # before minutes of work, not after
    result = run_demo(options)
    print(metric_table(result.rows))
    print(f"\nwrote {result.report}")
    return 0
