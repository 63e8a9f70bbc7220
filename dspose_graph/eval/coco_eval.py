"""COCO keypoint evaluation: predictions -> COCO results -> pycocotools ``COCOeval`` (OKS AP).

Reading and writing the files (ground truth, detections, keypoint results) is :mod:`dspose_graph.formats.coco`'s.

Top-down evaluation with detector boxes follows SimpleBaseline/HRNet/TokenPose: each person crop's score is
rescored as ``box score x mean confidence of its keypoints above a threshold``, then OKS-NMS per image removes
duplicate poses of one person found from overlapping boxes, then ``COCOeval`` (iouType ``keypoints``) scores
the rest. OKS-NMS runs with ground-truth boxes too, as official TokenPose's ``evaluate`` always applies it.
For skeletons other than COCO-17, the schema's OKS sigmas are set on ``params.kpt_oks_sigmas``; OKS-NMS
without explicit sigmas uses COCO-17's (``dspose_graph.topology.schemas.COCO17``) for 17 keypoints, as HRNet's does.

Shapes: ``N`` persons, ``K`` keypoints; keypoints ``(N, K, 3)`` are image-pixel ``x, y`` and a confidence.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dspose_graph.formats.coco import (check_ground_truth, check_keypoint_results, check_scorable, keypoint_category,
                                       keypoint_result, load_coco, read_keypoint_results, write_keypoint_results)
from dspose_graph.topology.schemas import COCO17, KeypointSchema

log = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def schema_sigmas(coco_gt: COCO, source: str = "ground truth") -> list[float]:
    """The OKS sigmas of the ground truth's keypoint schema; ``ValueError`` when the schema defines none."""
    schema = KeypointSchema.from_coco_category(keypoint_category(coco_gt, source), source=source)
    if schema.sigmas is None:
        raise ValueError(f"{source}: keypoint schema {schema.name!r} defines no OKS sigmas")
    return list(schema.sigmas)


def oks_iou(
    ref: np.ndarray,
    others: np.ndarray,
    ref_area: float,
    areas: np.ndarray,
    sigmas: Sequence[float],
    vis_threshold: float | None = None,
) -> np.ndarray:
    """OKS between one pose ``ref (K, 3)`` and poses ``others (M, K, 3)``, as HRNet's ``oks_iou``.

    ``e_k = d_k^2 / (2 s^2 (2 sigma_k)^2)`` with ``s^2`` the mean of the two areas; OKS = mean_k exp(-e_k).
    With ``vis_threshold`` the mean runs over the keypoints confident (> threshold) in both poses (0 if none).
    """
    sig = np.asarray(sigmas, dtype=np.float64)
    var = (2.0 * sig) ** 2
    d2 = ((others[:, :, :2] - ref[None, :, :2]) ** 2).sum(axis=2)
    s2 = (ref_area + np.asarray(areas, dtype=np.float64))[:, None] / 2.0
    terms = np.exp(-(d2 / var[None, :] / (s2 + np.spacing(1)) / 2.0))
    if vis_threshold is None:
        return terms.mean(axis=1)
    used = (ref[None, :, 2] > vis_threshold) & (others[:, :, 2] > vis_threshold)
    num = used.sum(axis=1)
    return np.where(num > 0, (terms * used).sum(axis=1) / np.maximum(num, 1), 0.0)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    threshold: float = 0.9,
    sigmas: Sequence[float] | None = None,
    vis_threshold: float | None = None,
) -> np.ndarray:
    """Greedy OKS non-maximum suppression of one image's poses; indices kept, best score first.

    A pose is dropped when its OKS with an already kept, higher-scored pose exceeds ``threshold``.
    ``sigmas`` default to COCO-17's for 17 keypoints and are required otherwise.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    ar = np.asarray(areas, dtype=np.float64)
    n = kp.shape[0]
    if kp.ndim != 3 or kp.shape[2] != 3 or sc.shape != (n,) or ar.shape != (n,):
        raise ValueError(f"oks_nms expects keypoints (N, K, 3), scores (N,), areas (N,); got {kp.shape}, {sc.shape}, {ar.shape}")
    if sigmas is None and kp.shape[1] == COCO17.num_keypoints:
        sigmas = COCO17.sigmas
    if sigmas is None:
        raise ValueError(f"oks_nms needs OKS sigmas for a {kp.shape[1]}-keypoint skeleton (its schema defines "
                         f"none); pass sigmas=")
    if len(sigmas) != kp.shape[1]:
        raise ValueError(f"{len(sigmas)} OKS sigmas for {kp.shape[1]} keypoints")
    order = np.argsort(-sc, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        ious = oks_iou(kp[i], kp[rest], ar[i], ar[rest], sigmas, vis_threshold)
        order = rest[ious <= threshold]
    return np.asarray(keep, dtype=np.int64)


def rescore(keypoint_scores: np.ndarray, box_scores: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """``box score x mean of the keypoint confidences above threshold`` (0 when none is), per person."""
    ks = np.asarray(keypoint_scores, dtype=np.float64)
    above = ks > threshold
    num = above.sum(axis=1)
    mean = np.where(num > 0, (ks * above).sum(axis=1) / np.maximum(num, 1), 0.0)
    return mean * np.asarray(box_scores, dtype=np.float64)


def make_coco_results(
    keypoints: np.ndarray,
    image_ids: Sequence[int],
    box_scores: Sequence[float] | None = None,
    areas: Sequence[float] | None = None,
    category_id: int = 1,
    sigmas: Sequence[float] | None = None,
    rescore_threshold: float = 0.2,
    nms_threshold: float | None = 0.9,
) -> list[dict[str, Any]]:
    """Per-person predictions -> COCO keypoint results (one dict per kept pose).

    ``keypoints (N, K, 3)`` image-pixel x, y and confidence; ``image_ids (N,)``; ``box_scores (N,)`` (1 for
    ground-truth boxes); ``areas (N,)`` the crop areas used by OKS-NMS (e.g. ``scale_w * scale_h``).
    Scores are rescored (:func:`rescore`); with ``nms_threshold`` OKS-NMS runs per image (needs ``areas``,
    and ``sigmas`` unless K = 17). Official TokenPose applies both with detector and ground-truth boxes.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    ids = np.asarray(image_ids, dtype=np.int64)
    n = kp.shape[0] if kp.ndim == 3 else -1
    if kp.ndim != 3 or kp.shape[2] != 3 or ids.shape != (n,):
        raise ValueError(f"expected keypoints (N, K, 3) and image_ids (N,); got {kp.shape}, {ids.shape}")
    if not np.isfinite(kp).all():
        raise ValueError(f"keypoints contain NaN/inf (person {int(np.argwhere(~np.isfinite(kp))[0][0])})")
    bs = np.ones(n) if box_scores is None else np.asarray(box_scores, dtype=np.float64)
    if bs.shape != (n,):
        raise ValueError(f"box_scores must be (N,) = ({n},), got {bs.shape}")
    scores = rescore(kp[:, :, 2], bs, rescore_threshold)
    keep = np.arange(n)
    if nms_threshold is not None:
        if areas is None:
            raise ValueError("OKS-NMS needs the crop areas; pass areas or nms_threshold=None")
        ar = np.asarray(areas, dtype=np.float64)
        if ar.shape != (n,):
            raise ValueError(f"areas must be (N,) = ({n},), got {ar.shape}")
        kept = []
        for img in np.unique(ids):
            members = np.flatnonzero(ids == img)
            kept.extend(members[oks_nms(kp[members], scores[members], ar[members], nms_threshold, sigmas)])
        keep = np.sort(np.asarray(kept, dtype=np.int64))
        log.debug("OKS-NMS kept %d of %d poses", keep.size, n)
    return [keypoint_result(ids[i], kp[i], scores[i], category_id=category_id, where=f"person {i}") for i in keep]


def evaluate_coco(
    results: list[dict[str, Any]],
    coco_gt: COCO,
    sigmas: Sequence[float] | None = None,
    results_path: str | Path | None = None,
) -> dict[str, float]:
    """OKS AP/AR of keypoint ``results`` against ``coco_gt`` with pycocotools ``COCOeval``.

    ``sigmas`` (K,) replace COCO's default OKS sigmas (needed for skeletons other than COCO-17).
    With ``results_path`` the results are also written there (atomically). Returns ``AP, AP50, AP75, APm,
    APl, AR, AR50, AR75, ARm, ARl`` (fractions in [0, 1]; -1 where pycocotools has no instance).
    """
    check_ground_truth(coco_gt)
    check_keypoint_results(results, coco_gt)
    if not results:
        raise ValueError("no keypoint results to evaluate")
    k = len(keypoint_category(coco_gt)["keypoints"])
    if sigmas is not None and len(sigmas) != k:
        raise ValueError(f"{len(sigmas)} OKS sigmas given for a {k}-keypoint skeleton")
    if sigmas is None and k != 17:
        raise ValueError(f"COCO's default OKS sigmas are for 17 keypoints; pass the schema's sigmas for K = {k}")
    if results_path is not None:
        write_keypoint_results(results_path, results)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # loadRes adds area/bbox/id fields to the records it is given: hand it copies.
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("pycocotools:\n%s", buf.getvalue().rstrip())
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}


def format_coco_table(stats: dict[str, float]) -> str:
    """A two-line table of the ten keypoint metrics, in percent."""
    header = " | ".join(f"{k:>6}" for k in STAT_NAMES)
    row = " | ".join(f"{100.0 * stats[k]:6.2f}" if stats[k] >= 0 else f"{'n/a':>6}" for k in STAT_NAMES)
    return f"{header}\n{row}"


def evaluate_coco_files(pred: str | Path, annotations: str | Path, sigmas_from_schema: bool = False,
                        score_threshold: float = 0.0) -> tuple[dict[str, float], int, list[float] | None]:
    """OKS AP/AR of a COCO keypoint results file against a COCO-format ground-truth file, both checked first
    (messages name ``dspose eval-coco``'s options). Returns ``(stats, results scored, sigmas)``: ``sigmas`` is
    ``None`` for COCO's own, else those of the annotation file's keypoint schema (``sigmas_from_schema``)."""
    coco_gt = load_coco(annotations)
    check_ground_truth(coco_gt, str(annotations))
    check_scorable(coco_gt, f"--annotations {annotations}")
    sigmas = schema_sigmas(coco_gt, str(annotations)) if sigmas_from_schema else None
    results = read_keypoint_results(pred, coco_gt, score_threshold=score_threshold)
    return evaluate_coco(results, coco_gt, sigmas=sigmas), len(results), sigmas
