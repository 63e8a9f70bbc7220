"""``dspose info MODEL``: a preset's configuration and parameter counts (ours vs the paper)."""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "show a model preset's configuration and parameter counts"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="preset name (omit with --list)")
    parser.add_argument("--list", action="store_true", help="list the presets")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model field as in a training config, e.g. --set model.overrides.conv=gat "
                             "(value parsed as YAML); repeatable")
    parser.add_argument("--json", action="store_true", help="print the config and counts as JSON")


def run(args: argparse.Namespace) -> int:
    from dspose_graph.models import create_model, list_models
    from dspose_graph.models.presets import PAPER_PARAMS_M
    from dspose_graph.train.config import model_overrides
    from dspose_graph.train.pipeline import count_parameters

    if args.list or not args.model:
        for name in list_models():
            print(name)
        return 0
    # Shapes only: counting parameters needs no memory or initialisation.
    model = create_model(args.model, device="meta", **model_overrides(args.set))
    parts = {"backbone": model.backbone, "encoder": model.encoder, "head": model.head, "total": model}
    counts = {name: count_parameters(m) for name, m in parts.items()}
    paper = PAPER_PARAMS_M.get(args.model) if not args.set else None
    if args.json:
        print(json.dumps({"config": dataclasses.asdict(model.config),
                          "parameters": {k: {"trainable": t, "frozen": f} for k, (t, f) in counts.items()},
                          "paper_params_m": paper[0] if paper else None}, indent=2))
        return 0
    cfg = model.config
    print(f"{args.model}: {model.schema.name} K={model.num_keypoints}, input {cfg.input_size[0]}x{cfg.input_size[1]}, "
          f"heatmap {model.heatmap_size[0]}x{model.heatmap_size[1]}, {cfg.backbone} stage 3, "
          f"dim {cfg.dim}, blocks {'+'.join(map(str, cfg.depths))}, head {cfg.head} (N={cfg.head_layers}"
          + (f", conv {cfg.conv}, t={cfg.t}, {cfg.backend})" if cfg.head != "mlp" else ")"))
    print(f"{'part':<10}{'trainable':>14}{'frozen':>10}{'total':>14}")
    for name, (t, f) in counts.items():
        print(f"{name:<10}{t:>14,}{f:>10,}{t + f:>14,}")
    trainable, total = counts["total"][0], sum(counts["total"])
    if paper:
        print(f"paper: {paper[0]:.1f}M ({paper[1]})\nours:  {trainable / 1e6:.3f}M trainable "
              f"({trainable / 1e6 - paper[0]:+.3f}M), {total / 1e6:.3f}M with the frozen sine table "
              f"({total / 1e6 - paper[0]:+.3f}M)")
    return 0
