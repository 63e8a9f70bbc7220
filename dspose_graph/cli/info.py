"""``dspose info MODEL``: a preset's configuration and parameter counts (ours vs the paper); ``--flops``: FLOPs
per image of one preset or, without a name, of every preset at its input size."""

from __future__ import annotations

import argparse
import dataclasses
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
    from dspose_graph.models.complexity import PAPER_FLOPS_NOTE, flops_record, parameter_counts
    from dspose_graph.models.flops import preset_flops
    from dspose_graph.models.presets import PAPER_PARAMS_M
    from dspose_graph.train.config import model_overrides

    if args.flops and not args.model:
        return print_flops_table(as_json=args.json)
    if args.list or not args.model:
        for name in list_models():
            print(name)
        return 0
    # Shapes only: counting parameters needs no memory or initialisation.
    model = create_model(args.model, device="meta", **model_overrides(args.set))
    counts = parameter_counts(model)
    paper = PAPER_PARAMS_M.get(args.model) if not args.set else None
    flops = preset_flops(args.model, **model_overrides(args.set)) if args.flops else None
    if args.json:
        out = {"config": dataclasses.asdict(model.config),
               "parameters": {k: {"trainable": t, "frozen": f} for k, (t, f) in counts.items()},
               "paper_params_m": paper[0] if paper else None}
        if flops is not None:
            out["flops"] = flops_record(flops)
        print(json.dumps(out, indent=2))
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
    if flops is not None:
        parts = ", ".join(f"{name} {v / 1e9:.3f}" for name, v in flops.by_module.items())
        print(f"FLOPs per {flops.input_size[0]}x{flops.input_size[1]} image: {flops.gflops:.3f} GFLOPs "
              f"({flops.gmacs:.3f} GMACs; {parts})\n{PAPER_FLOPS_NOTE}")
    return 0


def print_flops_table(as_json: bool = False) -> int:
    """FLOPs per image of every preset at its own input size, the paper's figures beside."""
    from dspose_graph.models.complexity import PAPER_AT_INPUT, PAPER_FLOPS_NOTE, flops_record, preset_costs

    rows = preset_costs()
    if as_json:
        print(json.dumps({name: dict(flops_record(f), params=p) for name, f, p in rows}, indent=2))
        return 0
    print("FLOPs of one image's forward pass, torch.utils.flop_counter.FlopCounterMode: convolutions, matmuls "
          "and attention at 2 FLOPs per multiply-add (norms, activations, softmax not counted)")
    print(f"{'preset':<13}{'input w x h':>12}{'GFLOPs':>9}{'GMACs':>8}{'backbone':>10}{'encoder':>9}{'head':>8}"
          f"{'params':>9}  paper")
    for name, f, params in rows:
        w, h = f.input_size
        by = [f.by_module.get(part, 0) / 1e9 for part in ("backbone", "encoder", "head")]
        print(f"{name:<13}{f'{w} x {h}':>12}{f.gflops:>9.3f}{f.gmacs:>8.3f}{by[0]:>10.3f}{by[1]:>9.3f}{by[2]:>8.3f}"
              f"{params / 1e6:>8.2f}M  {PAPER_AT_INPUT.get(name, '-')}")
    print(PAPER_FLOPS_NOTE)
    return 0
