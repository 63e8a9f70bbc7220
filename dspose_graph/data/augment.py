"""Random top-down augmentation: scale, rotation, horizontal flip and half-body crops.

The augmentation only chooses crop parameters (:class:`CropParams`); the image and the keypoints are
then warped once with that crop (``image.crop_matrix``), so augmenting costs one ``cv2.warpAffine``.
Defaults follow SimpleBaseline/HRNet/TokenPose on COCO: scale x(1 +- 0.35), rotation +-45 degrees with
probability 0.6, flip with probability 0.5, half-body with probability 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dspose_graph.data.transforms import apply_affine
from topology.schemas import KeypointSchema


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random crop. ``scale_factor`` and ``rotation_factor`` are truncated-normal widths.

    The scale multiplier is ``1 + clip(N(0, 1), -1, 1) * scale_factor`` and the rotation
    ``clip(N(0, 1), -1, 1) * rotation_factor`` degrees, applied with probability ``rotation_prob``.
    """

    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    half_body_padding: float = 1.5

    def __post_init__(self) -> None:
        for name in ("rotation_prob", "flip_prob", "half_body_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentParams.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.scale_factor < 1.0:
            raise ValueError(f"AugmentParams.scale_factor must be in [0, 1), got {self.scale_factor}")


@dataclass(frozen=True)
class CropParams:
    """One crop: box ``center`` (x, y) and padded ``scale`` (w, h) in image pixels, degrees, mirror flag."""

    center: np.ndarray
    scale: np.ndarray
    rotation: float = 0.0
    flip: bool = False


def half_body_box(
    keypoints: np.ndarray,
    schema: KeypointSchema,
    aspect_ratio: float,
    rng: np.random.Generator,
    padding: float = 1.5,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A box around the visible upper- or lower-body joints (HRNet's half-body crop), or ``None``.

    Upper body is ``schema.upper_body``, lower body the rest. A half is chosen at random (upper with
    probability 0.5 when it has more than two visible joints); ``None`` when the chosen half has fewer
    than two visible joints. The centre is the mean of the half's joints, as in HRNet.
    """
    visible = keypoints[:, 2] > 0
    upper_mask = np.zeros(len(keypoints), dtype=bool)
    upper_mask[list(schema.upper_body)] = True
    upper = keypoints[visible & upper_mask, :2]
    lower = keypoints[visible & ~upper_mask, :2]
    if rng.random() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    center = chosen.mean(axis=0)
    lo, hi = chosen.min(axis=0), chosen.max(axis=0)
    w, h = hi - lo
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center.astype(np.float64), np.array([w, h], dtype=np.float64) * padding


def sample_crop(
    rng: np.random.Generator,
    center: np.ndarray,
    scale: np.ndarray,
    keypoints: np.ndarray,
    schema: KeypointSchema,
    aspect_ratio: float,
    params: AugmentParams,
) -> CropParams:
    """Draw a random training crop around the box ``center``/``scale`` (pixels, padded).

    ``keypoints`` is ``(K, 3)`` in image pixels with visibility; it only decides the half-body crop.
    """
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    num_visible = int((keypoints[:, 2] > 0).sum())
    if num_visible > params.half_body_min_joints and schema.upper_body and rng.random() < params.half_body_prob:
        box = half_body_box(keypoints, schema, aspect_ratio, rng, params.half_body_padding)
        if box is not None and np.all(box[1] > 0):
            center, scale = box
    scale = scale * (1.0 + np.clip(rng.standard_normal(), -1.0, 1.0) * params.scale_factor)
    rotation = 0.0
    if rng.random() < params.rotation_prob:
        rotation = float(np.clip(rng.standard_normal(), -1.0, 1.0) * params.rotation_factor)
    flip = bool(schema.flip_pairs) and rng.random() < params.flip_prob
    return CropParams(center=center, scale=scale, rotation=rotation, flip=flip)


def transform_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, flip_index: np.ndarray | None = None
) -> np.ndarray:
    """Move ``(K, 3)`` keypoints (x, y, visibility) through a 2x3 crop; permute left/right if flipped.

    ``flip_index`` is ``schema.flip_index``; pass it exactly when the crop mirrors the image.
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    out[:, :2] = apply_affine(out[:, :2], matrix)
    if flip_index is not None:
        out = out[flip_index]
    return out
