"""PCK: the fraction of labelled keypoints that lie within a fraction of the person's size of the truth,
and two left/right errors: the swap rate and the mirror rate.

Two sizes:

- box PCK: the longest side of the person box, recovered from the crop box the datasets give in
  ``meta["scale"]`` by removing the crop padding (``BOX_PADDING``). Works for any skeleton (it needs no OKS
  sigmas and no head boxes).
- torso PCK, what LSP papers report (PCK@0.2 of Johnson & Everingham's LSP protocol as used by DeepPose, CPM and
  later work): the distance between the person's left shoulder and right hip in the ground truth. Persons whose
  left shoulder or right hip is unlabelled have no torso size and are left out (:func:`torso_pck` counts them).

Shapes: ``N`` persons, ``K`` keypoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dspose_graph.data.transforms import BOX_PADDING
from dspose_graph.topology.schemas import KeypointSchema

# Names of the torso diagonal's joints across the built-in skeletons (LSP/MPII spell them l_/r_, COCO left_/right_).
TORSO_NAMES = (("l_shoulder", "left_shoulder"), ("r_hip", "right_hip"))


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


def torso_joints(schema: KeypointSchema) -> tuple[int, int] | None:
    """Indices of the left shoulder and right hip of ``schema`` (``None`` when it has no such pair)."""
    found = []
    for names in TORSO_NAMES:
        index = next((schema.keypoints.index(n) for n in names if n in schema.keypoints), None)
        if index is None:
            return None
        found.append(index)
    return found[0], found[1]


def _pose_arrays(coords: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``coords`` ``(N, K, 2)`` and ``gt`` ``(N, K, 3)`` as float64, or ``ValueError`` naming both shapes."""
    coords, gt = np.asarray(coords, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[-1] != 2 or gt.shape != coords.shape[:2] + (3,):
        raise ValueError(f"expected coords (N, K, 2) and gt (N, K, 3); got {coords.shape}, {gt.shape}")
    return coords, gt


def torso_sizes(gt: np.ndarray, torso: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each person's torso size ``(N,)`` (left shoulder to right hip, pixels) and whether it has one ``(N,)``: both
    joints labelled and apart."""
    shoulder, hip = torso
    size = np.linalg.norm(gt[:, shoulder, :2] - gt[:, hip, :2], axis=-1)
    return size, (gt[:, shoulder, 2] > 0) & (gt[:, hip, 2] > 0) & (size > 0)


def torso_pck(coords: np.ndarray, gt: np.ndarray, torso: tuple[int, int], threshold: float = 0.2
              ) -> dict[str, Any]:
    """Torso PCK@threshold in percent: mean over labelled keypoints and per keypoint.

    Args:
        coords: predicted keypoints ``(N, K, 2)`` in image pixels.
        gt: ground truth ``(N, K, 3)`` (x, y, visibility); a keypoint counts when its visibility is > 0.
        torso: indices of the left shoulder and right hip (:func:`torso_joints`).
        threshold: a keypoint is correct when its distance is below ``threshold x`` the torso size.

    Returns ``mean`` (over all counted keypoints), ``per_joint`` (K,) (NaN where a joint is never counted),
    ``persons`` counted and ``left_out`` (persons without a torso size).
    """
    coords, gt = _pose_arrays(coords, gt)
    size, has_torso = torso_sizes(gt, torso)
    counted = (gt[..., 2] > 0) & has_torso[:, None]
    if not counted.any():
        raise ValueError("torso PCK: no person with a labelled left shoulder and right hip and another labelled keypoint")
    dist = np.linalg.norm(coords - gt[..., :2], axis=-1) / np.where(has_torso, size, 1.0)[:, None]
    correct = (dist < threshold) & counted
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = 100.0 * correct.sum(0) / counted.sum(0)
    return {"mean": float(100.0 * correct.sum() / counted.sum()), "per_joint": per_joint,
            "persons": int(has_torso.sum()), "left_out": int((~has_torso).sum())}


def swap_rate(coords: np.ndarray, gt: np.ndarray, schema: KeypointSchema) -> float:
    """Percent of left/right pairs predicted the wrong way round.

    A pair (l, r) with both joints labelled counts as swapped when the crossed assignment is closer:
    ``|p_l - g_r| + |p_r - g_l| < |p_l - g_l| + |p_r - g_r|``. A model that cannot tell the sides apart
    scores about 50; the mean pose, which keeps every joint on its average side, scores the share of
    persons seen from behind or crossed.

    Args:
        coords: predictions ``(N, K, 2)``; gt: ground truth ``(N, K, 3)`` (x, y, v), labelled where v > 0.
    """
    if not schema.flip_pairs:
        raise ValueError(f"swap rate: schema {schema.name!r} has no left/right pairs")
    swapped = total = 0
    for left, right in schema.flip_pairs:
        both = (gt[:, left, 2] > 0) & (gt[:, right, 2] > 0)
        straight = np.linalg.norm(coords[:, left] - gt[:, left, :2], axis=-1) + \
            np.linalg.norm(coords[:, right] - gt[:, right, :2], axis=-1)
        crossed = np.linalg.norm(coords[:, left] - gt[:, right, :2], axis=-1) + \
            np.linalg.norm(coords[:, right] - gt[:, left, :2], axis=-1)
        swapped += int((both & (crossed < straight)).sum())
        total += int(both.sum())
    if total == 0:
        raise ValueError("swap rate: no held-out person has both joints of a left/right pair labelled")
    return 100.0 * swapped / total


def mirror_rate(coords: np.ndarray, gt: np.ndarray, schema: KeypointSchema, torso: tuple[int, int],
                threshold: float = 0.2) -> float:
    """Percent of left/right pairs predicted clearly mirrored, on the torso scale.

    A pair (l, r) with both joints labelled, of a person with a torso size (as :func:`torso_pck`), is mirrored when
    each predicted joint lies within ``threshold x`` torso of the *other* side's label and the two do not both lie
    within it of their own (Ronchi & Perona's "inversion" error, ICCV 2017, with torso PCK's distance instead of
    OKS). Unlike :func:`swap_rate`, which counts every pair whose crossed assignment is the closer one however far
    both predictions are, a pair predicted far from both labels is not mirrored: this is the part of the swap rate
    that a model gets confidently wrong (a person seen from behind predicted facing the camera).
    """
    coords, gt = _pose_arrays(coords, gt)
    if not schema.flip_pairs:
        raise ValueError(f"mirror rate: schema {schema.name!r} has no left/right pairs")
    size, has_torso = torso_sizes(gt, torso)
    limit = threshold * np.where(has_torso, size, 1.0)

    def near(a: int, b: int) -> np.ndarray:  # prediction of joint a within the limit of joint b's label
        return np.linalg.norm(coords[:, a] - gt[:, b, :2], axis=-1) < limit

    mirrored = total = 0
    for left, right in schema.flip_pairs:
        both = has_torso & (gt[:, left, 2] > 0) & (gt[:, right, 2] > 0)
        crossed = near(left, right) & near(right, left) & ~(near(left, left) & near(right, right))
        mirrored += int((both & crossed).sum())
        total += int(both.sum())
    if total == 0:
        raise ValueError("mirror rate: no person with a torso size has both joints of a left/right pair labelled")
    return 100.0 * mirrored / total
