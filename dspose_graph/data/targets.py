"""Gaussian heatmap targets and per-keypoint target weights.

Letters: K keypoints, (h, w) heatmap height and width, ``...`` any leading batch dimensions.

Three encodings of a joint at heatmap position ``mu`` (a codec's ``target``, see ``data.codec``):

- ``"nearest"`` (SimpleBaseline/HRNet "MSRA" targets): the Gaussian is centred on the nearest heatmap pixel
  ``floor(mu + 0.5)``, so the target carries up to half a pixel of quantisation error; cut to the
  ``(6 sigma + 1)`` square around that pixel. Weight 0 (and an all-zero map) when the joint is not visible
  or the square lies entirely outside the heatmap (HRNet's rule without its off-by-one).
- ``"subpixel"`` (DARK, Zhang et al. CVPR 2020; UDP): as ``"nearest"`` but centred on ``mu`` itself.
- ``"tokenpose"`` (official TokenPose ``JointsDataset.generate_target``): centred on ``mu``, never cut, and
  kept while ``int(mu - 3 sigma) < size`` and ``int(mu + 3 sigma + 1) >= 0`` on both axes (``int``
  truncates towards zero, as Python's does).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# The encodings above; a codec's ``target`` names one (``dspose_graph.data.codec``).
TARGETS = ("tokenpose", "nearest", "subpixel")


def gaussian_heatmaps(
    joints: np.ndarray,
    visible: np.ndarray,
    heatmap_size: Sequence[int],
    sigma: float = 2.0,
    unbiased: bool = False,
    target: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian target heatmaps for joints already in heatmap pixel coordinates.

    Args:
        joints: ``(..., K, 2)`` joint (x, y) in heatmap pixels (pixel centres at integers).
        visible: ``(..., K)`` truthy where the joint is labelled and should be learned.
        heatmap_size: ``(w, h)``.
        sigma: Gaussian standard deviation in heatmap pixels.
        unbiased: centre on the sub-pixel position instead of the nearest pixel (``target="subpixel"``).
        target: the encoding (see module doc); default ``"subpixel"`` if ``unbiased`` else ``"nearest"``.

    Shapes:
        - returns heatmaps ``(..., K, h, w)`` float32 and target weights ``(..., K)`` float32 in {0, 1}.
    """
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be positive, got {sigma}")
    target = target or ("subpixel" if unbiased else "nearest")
    if target not in TARGETS:
        raise ValueError(f"unknown target encoding {target!r}; valid: {list(TARGETS)}")
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-1] != 2:
        raise ValueError(f"joints must have shape (..., K, 2), got {joints.shape}")
    finite = np.isfinite(joints).all(-1)
    mu = np.where(finite[..., None], joints, 0.0)
    nearest = np.floor(mu + 0.5)
    radius = 3.0 * sigma
    if target == "tokenpose":
        lo, hi = np.trunc(mu - radius), np.trunc(mu + radius + 1.0)
        inside = (lo[..., 0] < w) & (lo[..., 1] < h) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0)
    else:
        # Keep the joint while its (6 sigma + 1) patch overlaps the heatmap. HRNet tests the exclusive patch
        # end with ">= 0", which also keeps a patch ending one pixel before column 0 (weight 1, empty map).
        lo, hi = nearest - radius, nearest + radius
        inside = (lo[..., 0] <= w - 1) & (lo[..., 1] <= h - 1) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0)
    weights = (np.asarray(visible, dtype=bool) & finite & inside).astype(np.float32)

    centre = nearest if target == "nearest" else mu
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    # Separable Gaussian: (..., K, w) and (..., K, h) factors, cut to the patch around the nearest pixel.
    gx = np.exp(-((xs - centre[..., 0:1]) ** 2) / (2.0 * sigma**2))
    gy = np.exp(-((ys - centre[..., 1:2]) ** 2) / (2.0 * sigma**2))
    if target != "tokenpose":
        gx *= np.abs(xs - nearest[..., 0:1]) <= radius
        gy *= np.abs(ys - nearest[..., 1:2]) <= radius
    gy *= weights[..., None]
    heatmaps = (gy[..., :, None] * gx[..., None, :]).astype(np.float32)
    return heatmaps, weights
