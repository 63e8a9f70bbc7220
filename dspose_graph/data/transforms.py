"""Geometry helpers of top-down crops: affine application, person boxes to padded crop boxes, clipping.

A person box is ``center`` (x, y) and ``scale`` (w, h) in image pixels (already padded and set to the
model's aspect ratio). The crop matrix that maps such a box onto a grid, and its inverse, belong to the codec
(``dspose_graph.data.codec``: ``Codec.crop_affine``), which also owns the rule turning a box into a centre and
scale (``Codec.center_scale``, built on :func:`clip_box` and :func:`box_to_center_scale`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


# Person boxes are enlarged by this factor before cropping (SimpleBaseline/HRNet/TokenPose), in training,
# evaluation and inference alike; PCK undoes it to recover the person box.
BOX_PADDING = 1.25


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to points ``(..., 2)``."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def box_to_center_scale(box: Sequence[float], aspect_ratio: float, padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """COCO ``[x, y, w, h]`` box -> centre and padded scale (w, h) with ``w / h == aspect_ratio``."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float64) * padding


def clip_box(box: Sequence[float], width: float | None, height: float | None) -> list[float] | None:
    """Clip ``[x, y, w, h]`` to the image as HRNet does; ``None`` when nothing of positive area is left."""
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = x1 + max(0.0, w - 1.0), y1 + max(0.0, h - 1.0)
    if width is not None and height is not None:
        x2, y2 = min(float(width) - 1.0, x2), min(float(height) - 1.0, y2)
    if w <= 0 or h <= 0 or x2 <= x1 or y2 <= y1:
        return None
    return [x1, y1, x2 - x1, y2 - y1]
