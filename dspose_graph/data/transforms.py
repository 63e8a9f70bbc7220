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


def person_center_scale(
    box: Sequence[float],
    codec: str | Codec | None,
    image_size: tuple[float, float] | None,
    aspect_ratio: float,
    padding: float = BOX_PADDING,
    detection: bool = True,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre ``(2,)`` and padded scale ``(2,)`` of a person box ``[x, y, w, h]`` under ``codec``'s box rule.

    The one home of the rule for datasets (ground-truth and detected boxes) and :class:`~dspose_graph.predict.Predictor`
    (user and detector boxes, ``detection=True``). A detection under a codec that does not clip detections
    (TokenPose's ``_xywh2cs``) is centred at ``x + (w - 1) / 2`` with size ``w``, unclipped; other boxes are
    clipped to the image (``image_size`` = (width, height); ``None`` = no clipping) and, with
    ``codec.box_last_pixel``, grown by one pixel about the same centre (the box spans pixel edges).
    Returns ``None`` when no box of positive area is left.
    """
    codec = get_codec(codec)
    width, height = image_size if image_size is not None else (None, None)
    if detection and not codec.clip_detections:
        x, y, w, h = (float(v) for v in box)
        edges = [x - 0.5, y - 0.5, w, h] if w > 0 and h > 0 else None
    else:
        edges = clip_box(box, width, height)
        if edges is not None and codec.box_last_pixel:
            edges = [edges[0] - 0.5, edges[1] - 0.5, edges[2] + 1.0, edges[3] + 1.0]
    return None if edges is None else box_to_center_scale(edges, aspect_ratio, padding)
