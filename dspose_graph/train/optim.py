"""The optimiser and its schedule: Adam (fused on CUDA where torch has the kernel), the multistep decay, and what a resume must fix in them.

A resumed run restores the optimiser and scheduler states of its checkpoint, which carry the lr, milestones and
weight decay the checkpoint was trained with, and moment tensors in the memory layout of its parameters then.
:func:`apply_schedule` puts the config's schedule back (what ``--set optim.lr=...`` asks for) and
:func:`match_state_layout` gives every moment its parameter's layout (CUDA's fused Adam refuses a mismatch).
"""

from __future__ import annotations

import bisect
import collections
import logging
from typing import Any

import torch

from dspose_graph.train.config import OptimConfig, TrainConfig

log = logging.getLogger(__name__)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam over ``model``'s parameters; the fused kernel (one launch for all tensors) on CUDA where this torch has
    one for the parameters' devices, else the default implementation.

    Whether it has one is asked of torch itself (constructing the fused Adam), not of its version: the devices with
    fused kernels grew between releases (torch 2.3 has them for CUDA only, later ones for the CPU as well)."""
    params = list(model.parameters())
    if device.type == "cuda":
        try:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except RuntimeError as e:  # "`fused=True` requires all the params to be ... of supported devices"
            log.info("fused Adam unavailable for parameters on %s with torch %s (%s); using the default Adam",
                     sorted({p.device.type for p in params}), torch.__version__, e)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def accumulation_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimiser step: ``optim.accumulate``, or for ``"auto"`` the number that makes processes x
    ``optim.batch_size`` x steps equal ``optim.global_batch`` (``ValueError`` when it does not divide)."""
    o = config.optim
    if o.accumulate != "auto":
        return int(o.accumulate)
    per_step = world_size * o.batch_size
    if not o.global_batch:
        raise ValueError("optim.accumulate = 'auto' needs optim.global_batch (the global batch to reach)")
    if o.global_batch % per_step:
        raise ValueError(f"optim.accumulate = 'auto': optim.global_batch {o.global_batch} is not a multiple of "
                         f"{world_size} process(es) x optim.batch_size {o.batch_size} = {per_step}; choose a "
                         f"batch_size that divides it, or a whole optim.accumulate")
    return max(1, o.global_batch // per_step)


def make_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """The multistep decay of ``optim``: lr x ``gamma`` at each of ``milestones`` (epochs)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(optim.milestones), optim.gamma)


def layout_mismatches(optimizer: torch.optim.Optimizer) -> list[str]:
    """Where a parameter and its gradient or optimiser state differ in strides (what fused Adam refuses)."""
    found = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            tensors: dict[str, Any] = {"grad": p.grad, **optimizer.state.get(p, {})}
            for key, value in tensors.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    found.append(f"{tuple(p.shape)} {key}: strides {value.stride()} vs parameter {p.stride()}")
    return found


def match_state_layout(optimizer: torch.optim.Optimizer) -> int:
    """Give each optimiser state tensor its parameter's memory layout (a resume may change ``run.channels_last``:
    the saved moments keep the layout they were saved in). Returns how many tensors were converted."""
    converted = 0
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
                converted += 1
    return converted


def apply_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.MultiStepLR,
                   optim: OptimConfig, source: str) -> list[str]:
    """Make a restored optimiser and scheduler follow ``optim`` (lr, milestones, gamma, weight decay) from the
    scheduler's epoch on; returns the changes made, also logged as one warning naming ``source``.

    The current lr becomes ``optim.lr`` x ``gamma`` per milestone already passed, as if the run had been
    configured so from its start.
    """
    saved = {"lr": scheduler.base_lrs[0], "milestones": sorted(scheduler.milestones.elements()),
             "gamma": scheduler.gamma, "weight_decay": optimizer.param_groups[0]["weight_decay"]}
    wanted = {"lr": optim.lr, "milestones": sorted(optim.milestones), "gamma": optim.gamma,
              "weight_decay": optim.weight_decay}
    changes = [f"optim.{k} {saved[k]} -> {wanted[k]}" for k in wanted if saved[k] != wanted[k]]
    if not changes:
        return []
    milestones = sorted(optim.milestones)
    passed = bisect.bisect_right(milestones, scheduler.last_epoch)
    lr = optim.lr * optim.gamma ** passed
    scheduler.base_lrs = [optim.lr for _ in optimizer.param_groups]
    scheduler.milestones = type(scheduler.milestones)(milestones)
    scheduler.gamma = optim.gamma
    scheduler._last_lr = [lr for _ in optimizer.param_groups]  # what get_last_lr() reports
    for group in optimizer.param_groups:
        group["initial_lr"] = optim.lr
        group["lr"] = lr
        group["weight_decay"] = optim.weight_decay
    log.warning("%s: the config changes the checkpoint's schedule (%s); training goes on with lr %g at epoch %d",
                source, ", ".join(changes), lr, scheduler.last_epoch + 1)
    return changes


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict[str, Any], source: str) -> None:
    """Restore a GradScaler, or keep a fresh one where the checkpoint's scaler was off (a none/bf16 run resumed
    with fp16: there is no scale to restore)."""
    if scaler.is_enabled() and not saved:
        log.info("%s was trained without fp16 loss scaling: starting a fresh GradScaler (scale %g)", source,
                 scaler.get_scale())
        return
    scaler.load_state_dict(saved)


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The scheduler's state with its ``Counter`` (MultiStepLR's milestones) as a dict: torch < 2.4's
    ``weights_only`` loader refuses ``collections.Counter``, and every checkpoint must load on torch >= 2.3."""
    return {k: dict(v) if isinstance(v, collections.Counter) else v for k, v in scheduler.state_dict().items()}


def load_scheduler_state(scheduler: Any, saved: dict[str, Any]) -> None:
    """Restore :func:`scheduler_state` output (or a torch state dict), turning the milestones back into a Counter
    (a plain dict would raise KeyError on every epoch that is not a milestone)."""
    scheduler.load_state_dict({k: collections.Counter(v) if isinstance(getattr(scheduler, k, None), collections.Counter)
                               else v for k, v in saved.items()})
