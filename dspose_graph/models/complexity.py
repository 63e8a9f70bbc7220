"""What a model costs: parameter counts per part and FLOPs per image, beside the paper's figures.

``dspose info`` prints these reports; from Python, ``parameter_counts(create_model("dspose_b", device="meta"))``
counts without allocating weights, and ``preset_costs()`` gives every preset's FLOPs and parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from torch import nn

from dspose_graph.models.flops import FlopCount, preset_flops
from dspose_graph.models.presets import create_model, list_models

# What the paper reports for a preset at that preset's input size (../shared/paper_tables.md). It gives
# parameters only: none of its tables has a FLOPs column.
PAPER_AT_INPUT = {
    "dspose_b": "13.5M (Tab. 1-2, COCO 256x192)",
    "tokenpose_b": "13.5M (Tab. 2, COCO 256x192)",
    "dspose_l": "20.9M (Tab. 4, MPII 256x256)",
    "tokenpose_l": "21.4M (Tab. 4, MPII 256x256)",
}
PAPER_FLOPS_NOTE = ("paper: no FLOPs figure in any of its tables (1-8), parameters only; pose papers' "
                    "'GFLOPs' count multiply-adds, our GMACs column")


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` parameter counts (frozen: ``requires_grad=False``, e.g. the sine table)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def parameter_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``(trainable, frozen)`` of a :class:`~dspose_graph.models.DSPose`'s backbone, encoder and head, and of
    the whole model (``"total"``). Shapes are enough: a model on the ``meta`` device counts the same."""
    parts = {"backbone": model.backbone, "encoder": model.encoder, "head": model.head, "total": model}
    return {name: count_parameters(part) for name, part in parts.items()}


def flops_record(flops: FlopCount) -> dict[str, Any]:
    """``flops`` as a JSON-ready dict, with the paper's figure for that preset (``None`` where it gives none)."""
    return {"input_size": list(flops.input_size), "flops": flops.flops, "gflops": round(flops.gflops, 4),
            "gmacs": round(flops.gmacs, 4), "by_module": flops.by_module, "paper": PAPER_AT_INPUT.get(flops.model)}


def preset_costs(names: Iterable[str] | None = None) -> list[tuple[str, FlopCount, int]]:
    """``(name, FLOPs per image at the preset's own input size, trainable parameters)`` of every preset in
    ``names`` (default: all of :func:`list_models`), in that order."""
    return [(name, preset_flops(name), count_parameters(create_model(name, device="meta"))[0])
            for name in (list_models() if names is None else names)]


def model_report(model: nn.Module, paper: tuple[float, str] | None = None, flops: FlopCount | None = None) -> dict:
    """A :class:`~dspose_graph.models.DSPose`'s config and parameter counts as a JSON-ready dict, with the paper's
    count (``paper``: ``(millions, where)`` as in ``PAPER_PARAMS_M``) and FLOPs per image when given."""
    record = {"config": dataclasses.asdict(model.config),
              "parameters": {k: {"trainable": t, "frozen": f} for k, (t, f) in parameter_counts(model).items()},
              "paper_params_m": paper[0] if paper else None}
    if flops is not None:
        record["flops"] = flops_record(flops)
    return record


def format_model_report(name: str, model: nn.Module, paper: tuple[float, str] | None = None,
                        flops: FlopCount | None = None) -> str:
    """:func:`model_report` as text: the configuration in one line, parameters per part, ours against the paper's
    count, FLOPs per image by part."""
    cfg = model.config
    lines = [f"{name}: {model.schema.name} K={model.num_keypoints}, input {cfg.input_size[0]}x{cfg.input_size[1]}, "
             f"heatmap {model.heatmap_size[0]}x{model.heatmap_size[1]}, {cfg.backbone} stage 3, "
             f"dim {cfg.dim}, blocks {'+'.join(map(str, cfg.depths))}, head {cfg.head} (N={cfg.head_layers}"
             + (f", conv {cfg.conv}, t={cfg.t}, {cfg.backend})" if cfg.head != "mlp" else ")"),
             f"{'part':<10}{'trainable':>14}{'frozen':>10}{'total':>14}"]
    counts = parameter_counts(model)
    lines += [f"{part:<10}{t:>14,}{f:>10,}{t + f:>14,}" for part, (t, f) in counts.items()]
    trainable, total = counts["total"][0], sum(counts["total"])
    if paper:
        lines.append(f"paper: {paper[0]:.1f}M ({paper[1]})\nours:  {trainable / 1e6:.3f}M trainable "
                     f"({trainable / 1e6 - paper[0]:+.3f}M), {total / 1e6:.3f}M with the frozen sine table "
                     f"({total / 1e6 - paper[0]:+.3f}M)")
    if flops is not None:
        parts = ", ".join(f"{part} {v / 1e9:.3f}" for part, v in flops.by_module.items())
        lines.append(f"FLOPs per {flops.input_size[0]}x{flops.input_size[1]} image: {flops.gflops:.3f} GFLOPs "
                     f"({flops.gmacs:.3f} GMACs; {parts})\n{PAPER_FLOPS_NOTE}")
    return "\n".join(lines)


def format_flops_table(rows: list[tuple[str, FlopCount, int]]) -> str:
    """:func:`preset_costs` as a table: FLOPs per image in total and by part, parameters, the paper's figure."""
    lines = ["FLOPs of one image's forward pass, torch.utils.flop_counter.FlopCounterMode: convolutions, matmuls "
             "and attention at 2 FLOPs per multiply-add (norms, activations, softmax not counted)",
             f"{'preset':<13}{'input w x h':>12}{'GFLOPs':>9}{'GMACs':>8}{'backbone':>10}{'encoder':>9}{'head':>8}"
             f"{'params':>9}  paper"]
    for name, f, params in rows:
        w, h = f.input_size
        by = [f.by_module.get(part, 0) / 1e9 for part in ("backbone", "encoder", "head")]
        lines.append(f"{name:<13}{f'{w} x {h}':>12}{f.gflops:>9.3f}{f.gmacs:>8.3f}{by[0]:>10.3f}{by[1]:>9.3f}"
                     f"{by[2]:>8.3f}{params / 1e6:>8.2f}M  {PAPER_AT_INPUT.get(name, '-')}")
    return "\n".join([*lines, PAPER_FLOPS_NOTE])
