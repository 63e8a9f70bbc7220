"""Crops in, image keypoints out: the one inference path of prediction, validation, the perfect-network check
and the adjacency figures.

:func:`predict_crops` runs a network on a batch of person crops (averaged with the mirrored crops when
``flip_test``), decodes the heatmaps and maps the keypoints back into the image, every step with one
:class:`~dspose_graph.data.codec.Codec`: the one the crops were cut with, which for a checkpoint is the codec it
records (``models.checkpoint.inference_spec``). ``Predictor``, ``train.evaluate.predict_dataset``,
``eval.ideal.perfect_network`` and ``viz.learned`` all call it. It knows no model: ``forward`` is any callable
from crops to heatmaps.

Shapes: ``B`` crops, ``K`` keypoints, ``(H, W)`` input crop, ``(h, w)`` heatmap.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from dspose_graph.data.codec import Codec, get_codec
from dspose_graph.eval.flip import flip_test_heatmaps


def predict_crops(
    forward: Callable[[torch.Tensor], torch.Tensor],
    crops: torch.Tensor,
    centers: np.ndarray | torch.Tensor,
    scales: np.ndarray | torch.Tensor,
    *,
    codec: str | Codec,
    flip_index: Sequence[int] | np.ndarray | torch.Tensor,
    heatmap_size: Sequence[int],
    flip_test: bool = True,
    decode: str = "dark",
    rotations: np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``(B, K, 2)`` in image pixels and their scores ``(B, K)`` (heatmap maxima), float64 numpy.

    Args:
        forward: ``forward(crops) -> heatmaps (B, K, h, w)`` (a model in eval mode, or a wrapper around one).
        crops: ``(B, 3, H, W)`` crops, normalised as ``forward`` expects, on its device.
        centers, scales: ``(B, 2)`` the crop boxes in image pixels (``scale`` = padded box size).
        codec: the codec the crops were cut with (a name or a :class:`Codec`): flip shift, DARK border and
            back-projection.
        flip_index: the schema's left/right permutation, for the flip test.
        heatmap_size: ``(w, h)`` of the heatmaps.
        flip_test: average with the mirrored crops' heatmaps.
        decode: ``"dark"`` or ``"argmax"``.
        rotations: ``(B,)`` crop rotations in degrees (default 0).

    Heatmaps are decoded where they are (DARK's blur and Taylor step in torch) and copied to the host once.
    """
    codec = get_codec(codec)
    if flip_test:
        heatmaps = flip_test_heatmaps(forward, crops, flip_index, codec)
    else:
        heatmaps = forward(crops).float()
    coords, scores = codec.decode(heatmaps, method=decode)
    points = codec.to_image(coords, centers, scales, heatmap_size, rotations)
    return (points.cpu().numpy().astype(np.float64, copy=False),
            scores.cpu().numpy().astype(np.float64, copy=False))
