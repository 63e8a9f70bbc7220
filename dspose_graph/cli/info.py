"""``dspose info MODEL``: a preset's configuration and parameter counts (ours vs the paper); ``--flops``: FLOPs
per image of one preset or, without a name, of every preset at its input size."""

from __future__ import annotations

import argparse
import json

HELP = "show a model preset's configuration, parameter counts and (--flops) FLOPs per image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="preset name (omit with --list)")
    parser.add_argument("--list", action="store_true", help="list the presets")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model field as in a training config, e.g. --set model.overrides.conv=gat "
                             "(value parsed as YAML); repeatable")
    parser.add_argument("--json", action="store_true", help="print the config and counts as JSON")
    parser.add_argument("--flops", action="store_true",
                        help="FLOPs of one image's forward pass (torch FlopCounterMode) for MODEL, or for every "
                             "preset when MODEL is omitted, beside the paper's figures")


def run(args: argparse.Namespace) -> int:
    from dspose_graph.models import create_model, list_models
    from dspose_graph.models.complexity import (flops_record, format_flops_table, format_model_report, model_report,
                                                preset_costs)
    from dspose_graph.models.flops import preset_flops
    from dspose_graph.models.presets import PAPER_PARAMS_M
    from dspose_graph.train.config import model_overrides

    if args.flops and not args.model:  # FLOPs per image of every preset at its own input size
        rows = preset_costs()
        print(json.dumps({name: dict(flops_record(f), params=p) for name, f, p in rows}, indent=2) if args.json
              else format_flops_table(rows))
        return 0
    if args.list or not args.model:
        print("\n".join(list_models()))
        return 0
    # Shapes only: counting parameters needs no memory or initialisation.
    model = create_model(args.model, device="meta", **model_overrides(args.set))
    paper = PAPER_PARAMS_M.get(args.model) if not args.set else None  # the paper's count is of the preset as is
    flops = preset_flops(args.model, **model_overrides(args.set)) if args.flops else None
    print(json.dumps(model_report(model, paper, flops), indent=2) if args.json
          else format_model_report(args.model, model, paper, flops))
    return 0
