"""COCO keypoint evaluation: predictions -> COCO results -> pycocotools ``COCOeval`` (OKS AP).

Top-down evaluation with detector boxes follows SimpleBaseline/HRNet/TokenPose: each person crop's score is
rescored as ``box score x mean confidence of its keypoints above a threshold``, then OKS-NMS per image removes
duplicate poses of one person found from overlapping boxes, then ``COCOeval`` (iouType ``keypoints``) scores
the rest. OKS-NMS runs with ground-truth boxes too, as official TokenPose's ``evaluate`` always applies it.
For skeletons other than COCO-17, the schema's OKS sigmas are set on ``params.kpt_oks_sigmas``; OKS-NMS
without explicit sigmas uses COCO-17's (``topology.schemas.COCO17``) for 17 keypoints, as HRNet's does.

Shapes: ``N`` persons, ``K`` keypoints; keypoints ``(N, K, 3)`` are image-pixel ``x, y`` and a confidence.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dspose_graph.io import atomic_write_json, read_json
from topology.schemas import COCO17

log = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def keypoint_category(coco_gt: COCO, source: str = "ground truth") -> dict[str, Any]:
    """The ground truth's (single) category with a ``keypoints`` list."""
    cats = [c for c in coco_gt.loadCats(coco_gt.getCatIds()) if c.get("keypoints")]
    if len(cats) != 1:
        raise ValueError(f"{source}: expected exactly one category with 'keypoints', found {[c.get('name') for c in cats]}")
    return cats[0]


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
    return [
        {"image_id": int(ids[i]), "category_id": int(category_id),
         "keypoints": [round(float(v), 3) for v in kp[i].reshape(-1)], "score": float(scores[i])}
        for i in keep
    ]


def write_coco_results(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Write COCO results JSON atomically (never half-written)."""
    atomic_write_json(path, results)
    return Path(path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(values: Any, size: int, where: str, field: str, layout: str,
             names: Sequence[str] | None = None) -> np.ndarray:
    """``values`` as a float array of ``size`` finite numbers, else ``ValueError`` naming the first bad entry.

    ``layout`` describes the expected content for the message; ``names`` label each group of three values
    (keypoint names for ``x, y, v`` triples).
    """
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}: field {field!r} must be a list of {size} numbers ({layout}), "
                         f"got {type(values).__name__} {values!r:.60}")
    if len(values) != size:
        raise ValueError(f"{where}: {field} must be {size} finite numbers ({layout}), got {len(values)} values")
    for i, v in enumerate(values):
        if not _is_number(v) or not math.isfinite(v):
            label = f" (keypoint {names[i // 3]!r} {'xyv'[i % 3]})" if names is not None else ""
            what = "NaN/inf" if _is_number(v) else f"a {type(v).__name__}, not a number"
            raise ValueError(f"{where}: field {field!r}[{i}]{label} = {v!r} is {what}; expected {size} finite "
                             f"numbers ({layout})")
    return np.asarray(values, dtype=np.float64)


def _id_hint(value: Any, known: Any) -> str:
    """Why ``value`` misses ``known`` ids when only its JSON type is wrong (``"397133"`` vs ``397133``)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and int(value) in known:
        return f"; it is the string {value!r}, the ground truth has the number {int(value)}: write it without quotes"
    if _is_number(value) and str(value) in known:
        return f"; the ground truth has the string {str(value)!r}: ids must have the ground truth's JSON type"
    return ""


def check_ground_truth(coco_gt: COCO, source: str = "ground truth") -> None:
    """Raise ``ValueError`` naming the annotation and field when ground truth cannot be scored.

    Checks every annotation of the keypoint category: a known ``image_id``; ``keypoints`` ``3 K`` finite
    numbers with visibility 0, 1 or 2; ``num_keypoints``, ``iscrowd``, finite ``area >= 0`` and ``bbox``
    ``[x, y, w, h]``, all of which ``COCOeval`` reads. One NaN keypoint would otherwise make every
    prediction match it (OKS of NaN distances).
    """
    cat = keypoint_category(coco_gt, source)
    names = list(cat["keypoints"])
    k = len(names)
    for i, ann in enumerate(coco_gt.dataset.get("annotations", [])):
        if ann.get("category_id") != cat["id"]:
            continue
        where = f"{source}: annotation id {ann.get('id')!r} (annotations[{i}], image_id {ann.get('image_id')!r})"
        if ann.get("image_id") not in coco_gt.imgs:
            raise ValueError(f"{where}: image_id is not in 'images'{_id_hint(ann.get('image_id'), coco_gt.imgs)}")
        absent = [f for f in ("keypoints", "num_keypoints", "iscrowd", "area", "bbox") if f not in ann]
        if absent:
            raise ValueError(f"{where}: missing fields {absent} (COCOeval reads them)")
        kp = _numbers(ann["keypoints"], 3 * k, where, "keypoints", f"x, y, v for {k} keypoints", names)
        bad_v = np.flatnonzero(~np.isin(kp[2::3], (0, 1, 2)))
        if bad_v.size:
            j = int(bad_v[0])
            raise ValueError(f"{where}: field 'keypoints' visibility of {names[j]!r} is {kp[3 * j + 2]:g}; "
                             f"expected 0 (not labelled), 1 (occluded) or 2 (visible)")
        box = _numbers(ann["bbox"], 4, where, "bbox", "x, y, w, h")
        if (box[2:] < 0).any():
            raise ValueError(f"{where}: field 'bbox' {ann['bbox']} has a negative width or height")
        for field in ("area", "num_keypoints", "iscrowd"):
            v = ann[field]
            if not _is_number(v) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{where}: field {field!r} = {v!r} must be a finite number >= 0")


def check_scorable(coco_gt: COCO, source: str = "ground truth") -> None:
    """Raise ``ValueError`` when no annotation can be scored: ``COCOeval`` ignores crowd regions and persons with
    ``num_keypoints`` 0, and with nothing left every metric is n/a."""
    cat = keypoint_category(coco_gt, source)
    annotations = coco_gt.dataset.get("annotations", [])
    if any(a.get("category_id") == cat["id"] and not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0
           for a in annotations):
        return
    raise ValueError(f"{source}: no annotation to score against (0 of its {len(annotations)} annotations is a "
                     "non-crowd person with num_keypoints > 0), so every metric would be n/a; give the ground truth "
                     "of the predicted images")


def check_results(results: list[dict[str, Any]], coco_gt: COCO, source: str = "results", kind: str = "keypoints") -> None:
    """Raise ``ValueError`` naming the record and field when results do not fit the ground truth.

    ``kind="keypoints"`` checks keypoint results (``3 K`` finite numbers); ``kind="boxes"`` checks detection
    results (``bbox [x, y, w, h]`` with positive size). Both need a known ``image_id`` (of the ground
    truth's JSON type: ``"397133"`` is not ``397133``), the ground truth's keypoint ``category_id`` and a
    finite ``score``.
    """
    if not isinstance(results, list):
        raise ValueError(f"{source}: expected a JSON list of result records, got {type(results).__name__}")
    cat = keypoint_category(coco_gt)
    names = list(cat["keypoints"])
    k = len(names)
    for i, r in enumerate(results):
        where = f"{source}: record {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: expected an object, got {type(r).__name__}")
        need = ("image_id", "category_id", "score", "keypoints" if kind == "keypoints" else "bbox")
        absent = [f for f in need if f not in r]
        if absent:
            raise ValueError(f"{where}: missing fields {absent}")
        if r["category_id"] != cat["id"]:
            raise ValueError(f"{where}: category_id {r['category_id']!r} but the ground truth's keypoint category is "
                             f"{cat['id']} ({cat.get('name')!r}); is this a file for another category?"
                             + _id_hint(r["category_id"], {cat["id"]}))
        if r["image_id"] not in coco_gt.imgs:
            raise ValueError(f"{where}: image_id {r['image_id']!r} is not in the ground truth"
                             + _id_hint(r["image_id"], coco_gt.imgs))
        if not _is_number(r["score"]) or not math.isfinite(r["score"]):
            raise ValueError(f"{where}: score {r['score']!r} is not a finite number")
        if kind == "keypoints":
            _numbers(r["keypoints"], 3 * k, where, "keypoints", f"x, y, v for {k} keypoints", names)
        else:
            b = _numbers(r["bbox"], 4, where, "bbox", "x, y, w, h with w, h > 0")
            if b[2] <= 0 or b[3] <= 0:
                raise ValueError(f"{where}: bbox must be [x, y, w, h] with w, h > 0, got {r['bbox']}")


def load_results(path: str | Path, coco_gt: COCO, kind: str = "keypoints", score_threshold: float = 0.0) -> list[dict[str, Any]]:
    """Read and check a COCO results JSON (keypoints, or detector ``bbox`` records with ``kind="boxes"``).

    Records scoring below ``score_threshold`` are dropped (the count is logged).
    """
    path = Path(path)
    results = read_json(path, "results file")
    check_results(results, coco_gt, source=str(path), kind=kind)
    kept = [r for r in results if r["score"] >= score_threshold]
    if len(kept) < len(results):
        log.info("%s: dropped %d of %d records with score < %g", path, len(results) - len(kept), len(results), score_threshold)
    return kept


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
    check_results(results, coco_gt)
    if not results:
        raise ValueError("no keypoint results to evaluate")
    k = len(keypoint_category(coco_gt)["keypoints"])
    if sigmas is not None and len(sigmas) != k:
        raise ValueError(f"{len(sigmas)} OKS sigmas given for a {k}-keypoint skeleton")
    if sigmas is None and k != 17:
        raise ValueError(f"COCO's default OKS sigmas are for 17 keypoints; pass the schema's sigmas for K = {k}")
    if results_path is not None:
        write_coco_results(results, results_path)
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
