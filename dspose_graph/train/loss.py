"""The training loss and its bookkeeping: the heatmap MSE, and the device-side sum read every few steps."""

from __future__ import annotations

import torch

from dspose_graph.train.distributed import DistInfo, all_reduce_


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


def heatmap_mse_loss(pred: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
    """Mean squared heatmap error with per-keypoint weights (0 for unlabelled keypoints), halved as in TokenPose.

    Shapes: ``pred``, ``target`` (B, K, h, w); ``target_weight`` (B, K).
    """
    w = target_weight[:, :, None, None]
    return 0.5 * torch.mean((pred.float() * w - target.float() * w) ** 2)


class LossMeter:
    """The losses of the steps since the last read, summed on the device, and the first step whose loss was not
    finite; :meth:`read` all-reduces both over the ranks and waits for them once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.first_bad = torch.full((), float("inf"), dtype=torch.float64, device=self.device)
        self.steps = 0

    def add(self, loss: torch.Tensor, global_step: int) -> None:
        """Queue ``loss`` (a 0-d device tensor) of optimiser step ``global_step``; no host wait."""
        loss = loss.detach().double()
        self.total += loss
        self.first_bad = torch.where(torch.isfinite(loss), self.first_bad, self.first_bad.clamp(max=float(global_step)))
        self.steps += 1

    def read(self, info: DistInfo) -> tuple[float, int | None]:
        """``(mean loss per step over the ranks, first non-finite global step or None)``, then reset."""
        total = all_reduce_(self.total.clone(), info, "sum")
        bad = all_reduce_(self.first_bad.clone(), info, "min")
        total_v, bad_v = torch.stack([total, bad]).tolist()
        mean = total_v / (self.steps * info.world_size)
        self.reset()
        return mean, None if bad_v == float("inf") else int(bad_v)
