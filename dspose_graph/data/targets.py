"""Gaussian heatmap targets and per-keypoint target weights.

Letters: K keypoints, (h, w) heatmap height and width, ``...`` any leading batch dimensions.

Two encodings of a joint at heatmap position ``mu``:

- ``unbiased=False`` (SimpleBaseline/HRNet "MSRA" targets): the Gaussian is centred on the nearest
  heatmap pixel ``floor(mu + 0.5)``, so the target carries up to half a pixel of quantisation error.
- ``unbiased=True`` (DARK, Zhang et al. CVPR 2020; also what UDP's Gaussian targets do): the Gaussian
  is centred on the exact sub-pixel position ``mu``.

Either way the Gaussian is cut to the ``(6 sigma + 1)`` square around the nearest pixel, as HRNet does,
and a joint gets weight 0 (and an all-zero map) when it is not visible or that square lies entirely
outside the heatmap (HRNet's rule without its off-by-one, see below).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def gaussian_heatmaps(
    joints: np.ndarray,
    visible: np.ndarray,
    heatmap_size: Sequence[int],
    sigma: float = 2.0,
    unbiased: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian target heatmaps for joints already in heatmap pixel coordinates.

    Args:
        joints: ``(..., K, 2)`` joint (x, y) in heatmap pixels (pixel centres at integers).
        visible: ``(..., K)`` truthy where the joint is labelled and should be learned.
        heatmap_size: ``(w, h)``.
        sigma: Gaussian standard deviation in heatmap pixels.
        unbiased: centre on the sub-pixel position instead of the nearest pixel (see module doc).

    Shapes:
        - returns heatmaps ``(..., K, h, w)`` float32 and target weights ``(..., K)`` float32 in {0, 1}.
    """
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be positive, got {sigma}")
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-1] != 2:
        raise ValueError(f"joints must have shape (..., K, 2), got {joints.shape}")
    finite = np.isfinite(joints).all(-1)
    mu = np.where(finite[..., None], joints, 0.0)
    nearest = np.floor(mu + 0.5)
    radius = 3.0 * sigma
    # Keep the joint while its (6 sigma + 1) patch overlaps the heatmap. HRNet tests the exclusive patch
    # end with ">= 0", which also keeps a patch ending one pixel before column 0 (weight 1, empty map).
    lo, hi = nearest - radius, nearest + radius
    inside = (lo[..., 0] <= w - 1) & (lo[..., 1] <= h - 1) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0)
    weights = (np.asarray(visible, dtype=bool) & finite & inside).astype(np.float32)

    centre = mu if unbiased else nearest
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    # Separable Gaussian: (..., K, w) and (..., K, h) factors, each cut to the patch around the nearest pixel.
    gx = np.exp(-((xs - centre[..., 0:1]) ** 2) / (2.0 * sigma**2))
    gx *= np.abs(xs - nearest[..., 0:1]) <= radius
    gy = np.exp(-((ys - centre[..., 1:2]) ** 2) / (2.0 * sigma**2))
    gy *= np.abs(ys - nearest[..., 1:2]) <= radius
    gy *= weights[..., None]
    heatmaps = (gy[..., :, None] * gx[..., None, :]).astype(np.float32)
    return heatmaps, weights


def joints_to_heatmap(
    joints_input: np.ndarray,
    input_size: Sequence[int],
    heatmap_size: Sequence[int],
    udp: bool = False,
) -> np.ndarray:
    """Joints in input-crop pixels ``(..., 2)`` -> heatmap pixels.

    The stride is ``input / heatmap`` (``(input - 1) / (heatmap - 1)`` with UDP, whose pixel grids are
    aligned on their first and last pixel centres).
    """
    joints_input = np.asarray(joints_input, dtype=np.float64)
    iw, ih = float(input_size[0]), float(input_size[1])
    hw, hh = float(heatmap_size[0]), float(heatmap_size[1])
    if udp:
        stride = np.array([(hw - 1.0) / (iw - 1.0), (hh - 1.0) / (ih - 1.0)])
    else:
        stride = np.array([hw / iw, hh / ih])
    return joints_input * stride
