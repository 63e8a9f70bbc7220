"""What a model costs: parameter counts per part and FLOPs per image, beside the paper's figures.

``dspose info`` prints these; from Python, ``parameter_counts(create_model("dspose_b", device="meta"))`` counts
without allocating weights, and ``preset_costs()`` gives every preset's FLOPs and parameters.
"""

from __future__ import annotations

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
