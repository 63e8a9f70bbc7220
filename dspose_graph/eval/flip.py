"""Flip test: the heatmaps of a crop averaged with those of its mirror image (the paper's test protocol).

The network runs on the crops and on the same crops mirrored left-right; the mirrored heatmaps are mapped
back with the codec's :meth:`~dspose_graph.data.codec.Codec.flip_back` (width axis mirrored, left/right
channels swapped, and the codec's flip shift: one pixel for ``"hrnet"``, none for ``"tokenpose"`` and ``"udp"``)
and the two are averaged. This module knows no model: ``forward`` is any callable from crops to heatmaps, such
as a model in eval mode.

Shapes: ``B`` crops, ``K`` keypoints, ``(H, W)`` input crop, ``(h, w)`` heatmap.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from dspose_graph.data.codec import Codec, get_codec


def flip_test_heatmaps(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    flip_index: Sequence[int] | np.ndarray | torch.Tensor,
    codec: str | Codec,
) -> torch.Tensor:
    """Float32 heatmaps ``(B, K, h, w)`` of ``images`` ``(B, 3, H, W)``, averaged with their mirrored crops'.

    Args:
        forward: ``forward(images) -> heatmaps`` (a model, or a wrapper around one).
        images: the crops (normalised as the model expects).
        flip_index: the schema's left/right permutation (``schema.flip_index``), length ``K``.
        codec: the codec the crops were cut with (a name or a :class:`Codec`); its flip shift maps the
            mirrored heatmaps back. Required: the shift is the codec's, never a default.
    """
    codec = get_codec(codec)
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    heatmaps = forward(images).float()
    mirrored = forward(torch.flip(images, dims=[3])).float()
    index = flip_index.cpu() if isinstance(flip_index, torch.Tensor) else flip_index
    return 0.5 * (heatmaps + codec.flip_back(mirrored, index))
