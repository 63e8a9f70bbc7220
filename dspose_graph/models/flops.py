"""Floating-point operations of one forward pass per image, counted by torch's ``FlopCounterMode``.

The count runs on the ``meta`` device: shapes only, no weights allocated and no arithmetic done, so the
largest preset costs a fraction of a second. On ``meta`` the attention kernel is PyTorch's reference
decomposition (two batched matmuls), which the counter sees on every torch version; on the CPU some versions
run a fused kernel the counter does not know and would miss attention entirely.

What is counted (torch's convention): convolutions, matmuls and attention, 2 FLOPs per multiply-add.
Normalisation, activations, softmax and additions are not counted. The pose papers' "GFLOPs" (TokenPose,
HRNet, SimpleBaseline) count multiply-adds, i.e. half of this: :attr:`FlopCount.gmacs`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dspose_graph.models.presets import create_model


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass of one ``(3, h, w)`` image, in total and per top-level submodule."""

    model: str
    input_size: tuple[int, int]  # (w, h)
    flops: int
    by_module: dict[str, int]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        """Multiply-adds, 1e9: the unit pose papers call GFLOPs."""
        return self.flops / 2e9


def count_forward_flops(model: nn.Module, input_size: tuple[int, int], batch: int = 1,
                        device: str | torch.device = "meta") -> tuple[int, dict[str, int]]:
    """FLOPs of ``model(x)`` for ``x`` of shape ``(batch, 3, h, w)``, divided by ``batch``.

    Args:
        model: any module taking an image batch; it is put in eval mode (no dropout, no training branches).
        input_size: ``(w, h)`` in pixels.
        batch: images per forward; the result is per image.
        device: where ``model`` lives and ``x`` is made (``"meta"`` for a shape-only count).

    Returns:
        ``(flops, by_module)``: per-image FLOPs in total and for each direct child of ``model`` that does any.
    """
    w, h = input_size
    model.eval()
    x = torch.empty(batch, 3, h, w, device=device)
    with warnings.catch_warnings():
        # torch < 2.4 tracks submodules only when given them; newer versions track them all and warn.
        warnings.filterwarnings("ignore", message="mods argument is not needed")
        counter = FlopCounterMode(mods=model, display=False)
    with torch.no_grad(), counter:
        model(x)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    by_module: dict[str, int] = {}
    for name, _ in model.named_children():
        flops = sum(per_module.get(f"{root}.{name}", {}).values())
        if flops:
            by_module[name] = int(flops) // batch
    return int(counter.get_total_flops()) // batch, by_module


def preset_flops(name: str, **overrides: Any) -> FlopCount:
    """FLOPs per image of preset ``name`` (with :func:`create_model` overrides) at its own input size."""
    model = create_model(name, device="meta", **overrides).to("meta")  # buffers made from data too
    flops, by_module = count_forward_flops(model, model.input_size)
    return FlopCount(model=name, input_size=tuple(model.input_size), flops=flops, by_module=by_module)
