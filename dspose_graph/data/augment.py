"""Random top-down augmentation: scale, rotation, horizontal flip and half-body crops.

The augmentation only chooses crop parameters (:class:`CropParams`); the image and the keypoints are
then warped once with that crop (``Codec.crop_matrix``), so augmenting costs one ``cv2.warpAffine``.

The rules are official TokenPose's (``lib/dataset/JointsDataset.py``, the same as HRNet's): scale
``s * clip(1 + sf n, 1 - sf, 1 + sf)``; rotation ``clip(rf n, -2 rf, 2 rf)`` with probability 0.6; flip
with probability 0.5; half-body with probability ``prob_half_body`` for persons with more than 8 labelled
joints, picking the upper body when ``randn() < 0.5`` (probability Phi(0.5) = 0.691), the box spanning the
half's joints plus one pixel, padded 1.5. The parameters of each official config are data in
:data:`AUGMENT_PRESETS` (``"coco"``: scale 0.35, rotation 45, half-body 0.3; ``"mpii"``: scale 0.25,
rotation 30, no half-body; ``"lspet"``: MPII's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dspose_graph.data.transforms import apply_affine
from topology.schemas import KeypointSchema


# TokenPose picks the upper body when ``np.random.randn() < 0.5``: probability Phi(0.5).
UPPER_BODY_PROB = 0.5 * (1.0 + math.erf(0.5 / math.sqrt(2.0)))


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random crop (defaults: official TokenPose on COCO).

    The scale multiplier is ``1 + clip(N(0, 1), -scale_clip, scale_clip) * scale_factor`` and the rotation
    ``clip(N(0, 1), -rotation_clip, rotation_clip) * rotation_factor`` degrees, applied with probability
    ``rotation_prob``. A half-body crop (probability ``half_body_prob``, persons with more than
    ``half_body_min_joints`` labelled joints) takes the upper body with probability ``half_body_upper_prob``;
    its box spans the chosen joints plus ``half_body_extent`` pixels, padded by ``half_body_padding``.
    """

    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    half_body_padding: float = 1.5
    scale_clip: float = 1.0
    rotation_clip: float = 2.0
    half_body_upper_prob: float = UPPER_BODY_PROB
    half_body_extent: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rotation_prob", "flip_prob", "half_body_prob", "half_body_upper_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentParams.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.scale_factor * self.scale_clip < 1.0:
            raise ValueError(f"AugmentParams: scale_factor x scale_clip must be in [0, 1), got "
                             f"{self.scale_factor} x {self.scale_clip}")
        if self.rotation_clip < 0 or self.half_body_extent < 0:
            raise ValueError(f"AugmentParams: rotation_clip and half_body_extent must be >= 0, got "
                             f"{self.rotation_clip}, {self.half_body_extent}")


# The official TokenPose configs' DATASET.{SCALE_FACTOR, ROT_FACTOR, PROB_HALF_BODY}
# (experiments/coco/tokenpose/*.yaml, experiments/mpii/tokenpose/*.yaml).
AUGMENT_PRESETS: dict[str, AugmentParams] = {
    "coco": AugmentParams(scale_factor=0.35, rotation_factor=45.0, half_body_prob=0.3),
    "mpii": AugmentParams(scale_factor=0.25, rotation_factor=30.0, half_body_prob=0.0),
    # LSP Extended: one full-body person per image like MPII, so MPII's official ranges.
    "lspet": AugmentParams(scale_factor=0.25, rotation_factor=30.0, half_body_prob=0.0),
}


def augment_preset(name: str, **overrides: float) -> AugmentParams:
    """The :data:`AUGMENT_PRESETS` entry ``name`` with ``overrides`` (field name -> value) applied."""
    if name not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; valid: {sorted(AUGMENT_PRESETS)}")
    return replace(AUGMENT_PRESETS[name], **overrides)


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
    upper_prob: float = UPPER_BODY_PROB,
    extent: float = 1.0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A box around the visible upper- or lower-body joints (TokenPose/HRNet's half-body crop), or ``None``.

    Upper body is ``schema.upper_body``, lower body the rest. A half is chosen at random (upper with
    probability ``upper_prob`` when it has more than two visible joints); ``None`` when the chosen half has
    fewer than two visible joints. The centre is the mean of the half's joints; the box spans them plus
    ``extent`` pixels (TokenPose: ``max - min + 1``), set to the aspect ratio and padded by ``padding``.
    """
    visible = keypoints[:, 2] > 0
    upper_mask = np.zeros(len(keypoints), dtype=bool)
    upper_mask[list(schema.upper_body)] = True
    upper = keypoints[visible & upper_mask, :2]
    lower = keypoints[visible & ~upper_mask, :2]
    if rng.random() < upper_prob and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    center = chosen.mean(axis=0)
    lo, hi = chosen.min(axis=0), chosen.max(axis=0)
    w, h = hi - lo + extent
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
        box = half_body_box(keypoints, schema, aspect_ratio, rng, params.half_body_padding,
                            params.half_body_upper_prob, params.half_body_extent)
        if box is not None and np.all(box[1] > 0):
            center, scale = box
    scale = scale * (1.0 + np.clip(rng.standard_normal(), -params.scale_clip, params.scale_clip) * params.scale_factor)
    rotation = 0.0
    if rng.random() < params.rotation_prob:
        rotation = float(np.clip(rng.standard_normal(), -params.rotation_clip, params.rotation_clip) * params.rotation_factor)
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
