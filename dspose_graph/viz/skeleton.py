"""Keypoints drawn on images: one person or many, and grids of predictions for reports.

Limbs and joints are coloured by side from the schema's flip pairs: the person's left in orange,
right in blue, centre (or mixed) limbs in green, so a left/right swap is visible at a glance.

Shapes: P persons, K keypoints; ``keypoints`` is (K, 2|3) or (P, K, 2|3) with (x, y[, v or score]).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure

from dspose_graph.io import atomic_path
from dspose_graph.topology.schemas import KeypointSchema

LEFT, RIGHT, CENTRE = (255, 140, 0), (30, 120, 255), (40, 200, 60)
_FORMATS = {".png": "png", ".pdf": "pdf"}


def _side_colours(schema: KeypointSchema) -> list[tuple[int, int, int]]:
    colours = [CENTRE] * schema.num_keypoints
    for i in schema.left:
        colours[i] = LEFT
    for i in schema.right:
        colours[i] = RIGHT
    return colours


def _as_persons(keypoints: np.ndarray, scores: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, K, 2) coordinates and (P, K) confidences from the accepted input shapes."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[1] != k or kp.shape[2] not in (2, 3):
        raise ValueError(f"draw_skeleton: keypoints must have shape (K, 2|3) or (P, K, 2|3) with K={k}, "
                         f"got {np.shape(keypoints)}")
    if scores is not None:
        conf = np.asarray(scores, dtype=np.float64).reshape(-1, k) if np.size(scores) == kp.shape[0] * k else None
        if conf is None:
            raise ValueError(f"draw_skeleton: scores must have shape (K,) or (P, K) matching keypoints "
                             f"{kp.shape[:2]}, got {np.shape(scores)}")
    elif kp.shape[2] == 3:
        conf = kp[..., 2]
    else:
        conf = np.ones(kp.shape[:2])
    return kp[..., :2], conf


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, schema: KeypointSchema, scores: np.ndarray | None = None,
                  thr: float = 0.3, radius: int | None = None, thickness: int | None = None) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) RGB uint8 with the skeletons of ``keypoints`` drawn on it.

    A joint is drawn when its confidence is above ``thr``: ``scores`` if given, else the third
    keypoint column (COCO visibility 0/1/2 or a score), else always; a limb when both ends are drawn.
    Line width and joint radius default to about 1% of the image's shorter side.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"draw_skeleton: image must be an (H, W, 3) uint8 RGB array, got shape {img.shape} dtype {img.dtype}")
    k = schema.num_keypoints
    coords, conf = _as_persons(keypoints, scores, k)
    out = np.ascontiguousarray(img.copy())
    unit = max(1, int(round(min(img.shape[:2]) / 100)))
    thickness = thickness or unit
    radius = radius or unit + 1
    colours = _side_colours(schema)
    shift, one = 4, 16
    for xy, c in zip(coords, conf):
        ok = (c > thr) & np.isfinite(xy).all(1)
        fx = np.round(np.nan_to_num(xy) * one).astype(np.int64)
        for i, j in schema.skeleton:
            if ok[i] and ok[j]:
                colour = colours[i] if colours[i] == colours[j] else CENTRE
                cv2.line(out, tuple(map(int, fx[i])), tuple(map(int, fx[j])), colour, thickness, cv2.LINE_AA, shift)
        for i in np.nonzero(ok)[0]:
            cv2.circle(out, tuple(map(int, fx[i])), radius * one, colours[i], -1, cv2.LINE_AA, shift)
            cv2.circle(out, tuple(map(int, fx[i])), radius * one, (255, 255, 255), 1, cv2.LINE_AA, shift)
    return out


def save_prediction_grid(images: Sequence[np.ndarray], keypoints_list: Sequence[np.ndarray], schema: KeypointSchema,
                         path: str | Path, titles: Sequence[str] | None = None,
                         scores_list: Sequence[np.ndarray | None] | None = None, thr: float = 0.3,
                         ncols: int | None = None) -> Path:
    """Save a grid figure of images with their keypoints drawn (PNG or PDF by ``path``'s suffix).

    ``images[i]`` is an RGB uint8 image and ``keypoints_list[i]`` its (K, 2|3) or (P, K, 2|3)
    keypoints; ``titles`` and ``scores_list``, if given, have one entry per image. Written atomically.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_prediction_grid: {path} must end in one of {sorted(_FORMATS)}")
    n = len(images)
    if n == 0 or len(keypoints_list) != n:
        raise ValueError(f"save_prediction_grid: need one keypoints array per image, got {n} images and {len(keypoints_list)} keypoint arrays")
    for name, seq in (("titles", titles), ("scores_list", scores_list)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"save_prediction_grid: {name} has {len(seq)} entries for {n} images")
    ncols = ncols or min(n, 4)
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(3 * ncols, 3.6 * nrows), layout="constrained")
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_axis_off()
        if i >= n:
            continue
        scores = None if scores_list is None else scores_list[i]
        ax.imshow(draw_skeleton(images[i], keypoints_list[i], schema, scores=scores, thr=thr))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=100)
    return path
