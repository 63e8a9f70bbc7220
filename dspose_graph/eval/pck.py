"""PCK: the fraction of labelled keypoints that lie within a fraction of the person's size of the truth.

The size is the longest side of the person box, recovered from the crop box the datasets give in
``meta["scale"]`` by removing the crop padding (``BOX_PADDING``). Used for held-out evaluation of any
skeleton (it needs no OKS sigmas and no head boxes), e.g. the demo's LSP-14 model.

Shapes: ``N`` persons, ``K`` keypoints.
"""

from __future__ import annotations

import numpy as np

from dspose_graph.data.transforms import BOX_PADDING


def pck_normalizer(scale: np.ndarray, padding: float = BOX_PADDING) -> np.ndarray:
    """Longest side ``(N,)`` of each person box, from the padded crop sizes ``scale`` ``(N, 2)`` (w, h) in pixels."""
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim != 2 or scale.shape[1] != 2:
        raise ValueError(f"scale must be (N, 2) crop sizes (w, h), got shape {scale.shape}")
    return scale.max(axis=1) / padding


def pck(coords: np.ndarray, gt: np.ndarray, size: np.ndarray, threshold: float = 0.2) -> float:
    """PCK@threshold in percent over the keypoints labelled in ``gt``.

    Args:
        coords: predicted keypoints ``(N, K, 2)`` in image pixels.
        gt: ground truth ``(N, K, 3)`` (x, y, visibility); a keypoint counts when its visibility is > 0.
        size: per-person normaliser ``(N,)`` in pixels (:func:`pck_normalizer`).
        threshold: a keypoint is correct when its distance is below ``threshold x size``.
    """
    coords, gt, size = (np.asarray(a, dtype=np.float64) for a in (coords, gt, size))
    n, k = coords.shape[:2] if coords.ndim == 3 else (-1, -1)
    if coords.shape != (n, k, 2) or gt.shape != (n, k, 3) or size.shape != (n,):
        raise ValueError(f"expected coords (N, K, 2), gt (N, K, 3), size (N,); got {coords.shape}, {gt.shape}, "
                         f"{size.shape}")
    labelled = gt[..., 2] > 0
    if not labelled.any():
        raise ValueError("PCK: no labelled keypoint in the evaluation set")
    dist = np.linalg.norm(coords - gt[..., :2], axis=-1) / size[:, None]
    return float(100.0 * (dist[labelled] < threshold).mean())
