"""Geometry of top-down crops: the one affine convention shared by data loading and decoding.

A person box is ``center`` (x, y) and ``scale`` (w, h) in image pixels (already padded and set to the
model's aspect ratio). The crop maps that box, rotated by ``rotation`` degrees about its centre, onto an
output grid of ``output_size`` (w, h): the box centre goes to the grid centre and the box width to the
grid width. Heatmap coordinates go back to the image with the same function and ``inverse=True``.

The scale factor and the grid centre depend on the codec's ``affine`` (``data.codec``):

- ``"plain"`` (HRNet): ``dst / src`` per axis, box centre at ``dst / 2``.
- ``"udp"`` (unbiased data processing, Huang et al., CVPR 2020): ``(dst - 1) / src`` per axis, centre at
  ``(dst - 1) / 2``: pixel centres are the sample points.
- ``"tokenpose"`` (official TokenPose/HRNet code's ``get_affine_transform``): one factor
  ``(dst_w - 1) / (src_w - 1)`` for both axes, centre at ``((dst_w - 1) / 2, (dst_h - 1) / 2)``. Only the
  width sets the factor, so the heatmap frame is not the input frame divided by a stride.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dspose_graph.data.codec import Codec, get_codec

# Person boxes are enlarged by this factor before cropping (SimpleBaseline/HRNet/TokenPose), in training,
# evaluation and inference alike; PCK undoes it to recover the person box.
BOX_PADDING = 1.25


def crop_affine(
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Sequence[int],
    inverse: bool = False,
    udp: bool | None = None,
    codec: str | Codec | None = None,
) -> np.ndarray:
    """2x3 affine matrix image -> output grid (or output grid -> image with ``inverse=True``).

    ``codec`` (default ``"tokenpose"``) picks the convention; the legacy ``udp`` flag means ``"udp"``/``"hrnet"``.
    """
    cx, cy = float(center[0]), float(center[1])
    sw, sh = float(scale[0]), float(scale[1])
    ow, oh = float(output_size[0]), float(output_size[1])
    if sw <= 0 or sh <= 0:
        raise ValueError(f"crop scale must be positive, got {tuple(scale)}")
    affine = get_codec(codec, udp).affine
    if affine == "tokenpose":
        if sw <= 1.0:
            raise ValueError(f"crop scale width must exceed 1 px for the tokenpose affine, got {tuple(scale)}")
        sx = sy = (ow - 1.0) / (sw - 1.0)
        ox, oy = (ow - 1.0) / 2.0, (oh - 1.0) / 2.0
    elif affine == "udp":
        sx, sy = (ow - 1.0) / sw, (oh - 1.0) / sh
        ox, oy = (ow - 1.0) / 2.0, (oh - 1.0) / 2.0
    else:
        sx, sy = ow / sw, oh / sh
        ox, oy = ow / 2.0, oh / 2.0
    theta = np.deg2rad(rotation)
    cos, sin = np.cos(theta), np.sin(theta)
    # Forward: translate centre to origin, rotate by -rotation (image content turns by +rotation), scale, shift.
    rot = np.array([[cos, sin], [-sin, cos]])
    lin = np.diag([sx, sy]) @ rot
    off = np.array([ox, oy]) - lin @ np.array([cx, cy])
    m = np.hstack([lin, off[:, None]])
    if inverse:
        inv_lin = np.linalg.inv(lin)
        m = np.hstack([inv_lin, (-inv_lin @ off)[:, None]])
    return m.astype(np.float64)


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
