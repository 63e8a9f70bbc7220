"""COCO-format files: the one reader of ground truth, of person detections and of keypoint results, and the
one writer of keypoint results.

- Ground truth (``images``, ``annotations``, a keypoint category): :func:`load_coco` (a ``pycocotools`` index,
  checked) and :func:`check_ground_truth` (what ``COCOeval`` reads).
- Detections in: :func:`read_detections` reads a COCO detection-results list (``{image_id, category_id,
  bbox, score}``) or a COCO dataset object (its annotation boxes, score 1, crowd regions skipped). The
  dataset (``data.val_boxes``), evaluation and ``dspose predict --boxes`` all read boxes through it.
- Keypoint results out: :func:`keypoint_result` makes one record (checked, rounded) and
  :func:`write_keypoint_results` writes a list, one record per line, strict JSON; :func:`read_keypoint_results`
  reads one back and checks it against the ground truth.

Every error is a ``ValueError`` naming the file, the record and the field: ``<file>: record <i>: field
'<name>' ...``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Container, Sequence

import numpy as np
from pycocotools.coco import COCO

from dspose_graph.io import atomic_write_text, read_json

log = logging.getLogger(__name__)

BOX_FIELDS = ("x", "y", "w", "h")
# No image is a million pixels across (JPEG stops at 65535); a larger box value is a broken detection, and
# 1e308 would overflow to inf in the crop arithmetic.
MAX_BOX_VALUE = 1e6
PERSON_CATEGORY = 1


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def box_problem(box: Sequence[Any], inside_image: bool = False) -> str | None:
    """Why ``box`` is not a usable ``[x, y, w, h]`` (naming the field), or ``None`` when it is.

    Refused: not 4 numbers, a NaN/inf or beyond :data:`MAX_BOX_VALUE` value, ``w <= 0`` or ``h <= 0``; with
    ``inside_image`` also a negative ``x`` or ``y``.
    """
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        return f"must be [x, y, w, h], got {box!r}"
    for name, value in zip(BOX_FIELDS, box):
        if not _is_number(value):
            return f"field {name!r} = {value!r} is not a number"
        if not np.isfinite(value) or abs(value) > MAX_BOX_VALUE:
            return f"field {name!r} = {value!r} is not a finite pixel value (|value| <= {MAX_BOX_VALUE:g})"
    for name, value in zip(BOX_FIELDS[2:], box[2:]):
        if value <= 0:
            return f"field {name!r} = {value!r} is not positive (an empty box)"
    for name, value in zip(BOX_FIELDS[:2], box[:2]):
        if inside_image and value < 0:
            return f"field {name!r} = {value:g} is negative; X Y is the top-left corner inside the image"
    return None


def finite_numbers(values: Any, size: int, where: str, field: str, layout: str,
                   names: Sequence[str] | None = None) -> np.ndarray:
    """``values`` as a float array of ``size`` finite numbers, else ``ValueError`` naming the first bad entry.

    ``layout`` describes the expected content for the message; ``names`` label each group of three values
    (keypoint names for ``x, y, v`` triples).
    """
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}: field {field!r} must be a list of {size} numbers ({layout}), "
                         f"got {type(values).__name__} {values!r:.60}")
    if len(values) != size:
        raise ValueError(f"{where}: field {field!r} must be {size} finite numbers ({layout}), got {len(values)} values")
    for i, v in enumerate(values):
        if not _is_number(v) or not math.isfinite(v):
            label = f" (keypoint {names[i // 3]!r} {'xyv'[i % 3]})" if names is not None else ""
            what = "NaN/inf" if _is_number(v) else f"a {type(v).__name__}, not a number"
            raise ValueError(f"{where}: field {field!r}[{i}]{label} = {v!r} is {what}; expected {size} finite "
                             f"numbers ({layout})")
    return np.asarray(values, dtype=np.float64)


def id_hint(value: Any, known: Any) -> str:
    """Why ``value`` misses ``known`` ids when only its JSON type is wrong (``"397133"`` vs ``397133``)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and int(value) in known:
        return f"; it is the string {value!r}, the ground truth has the number {int(value)}: write it without quotes"
    if _is_number(value) and str(value) in known:
        return f"; the ground truth has the string {str(value)!r}: ids must have the ground truth's JSON type"
    return ""


def image_names(data: dict[str, Any], source: str) -> dict[str, int]:
    """File name -> image id of a COCO dataset object's ``images`` (each needs an integer ``id`` and a ``file_name``)."""
    images = data.get("images")
    if not isinstance(images, list):
        raise ValueError(f"{source}: expected a COCO dataset object with an 'images' list of {{'id', 'file_name'}}")
    out = {}
    for i, im in enumerate(images):
        where = f"{source}: images[{i}]"
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{where} needs 'id' and 'file_name', got {im!r:.120}")
        if not isinstance(im["id"], int) or isinstance(im["id"], bool):
            raise ValueError(f"{where} field 'id' = {im['id']!r} is not an integer image id")
        out[Path(str(im["file_name"])).name] = im["id"]
    return out


def keypoint_categories(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of a COCO dataset object's ``categories`` that have a ``keypoints`` list."""
    return [c for c in data.get("categories", []) if isinstance(c, dict) and c.get("keypoints")]


def load_coco(path: str | Path, data: dict[str, Any] | None = None) -> COCO:
    """A ``pycocotools.coco.COCO`` index of a COCO-format file (or of ``data``, the file's content built in
    memory; ``path`` then only names it in messages), checked, without pycocotools' prints."""
    data = read_json(path, "annotation file") if data is None else data
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"annotation file {path} must be a COCO-format object with 'images' and 'annotations' lists")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise ValueError(f"annotation file {path}: images[{i}] must have 'id' and 'file_name', got {img!r:.120}")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann or "image_id" not in ann:
            raise ValueError(f"annotation file {path}: annotations[{i}] must have 'id' and 'image_id', got {ann!r:.120}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def keypoint_annotations(coco: COCO, category_id: int, k: int, source: str) -> list[dict[str, Any]]:
    """The annotations of the keypoint category ``category_id``, checked for reading.

    Every annotation needs an ``image_id`` in ``images``; those of the category need ``keypoints`` (``3 k``
    finite numbers) and ``bbox`` (4 finite numbers). ``ValueError`` names the file, the annotation and the
    field. (:func:`check_ground_truth` checks what ``COCOeval`` needs on top.)
    """
    names = coco.cats.get(category_id, {}).get("keypoints")
    names = names if isinstance(names, list) and len(names) == k else None
    kept = []
    for i, ann in enumerate(coco.dataset["annotations"]):
        where = f"{source}: annotation id {ann.get('id')!r} (annotations[{i}])"
        if ann.get("image_id") not in coco.imgs:
            raise ValueError(f"{where}: field 'image_id' = {ann.get('image_id')!r} is not in 'images'"
                             + id_hint(ann.get("image_id"), coco.imgs))
        if ann.get("category_id") != category_id:
            continue
        finite_numbers(ann.get("keypoints"), 3 * k, where, "keypoints", f"x, y, v for {k} keypoints", names)
        finite_numbers(ann.get("bbox"), 4, where, "bbox", "x, y, w, h")
        kept.append(ann)
    return kept


def keypoint_category(coco_gt: COCO, source: str = "ground truth") -> dict[str, Any]:
    """The ground truth's (single) category with a ``keypoints`` list."""
    cats = [c for c in coco_gt.loadCats(coco_gt.getCatIds()) if c.get("keypoints")]
    if len(cats) != 1:
        raise ValueError(f"{source}: expected exactly one category with 'keypoints', found {[c.get('name') for c in cats]}")
    return cats[0]


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
            raise ValueError(f"{where}: image_id is not in 'images'{id_hint(ann.get('image_id'), coco_gt.imgs)}")
        absent = [f for f in ("keypoints", "num_keypoints", "iscrowd", "area", "bbox") if f not in ann]
        if absent:
            raise ValueError(f"{where}: missing fields {absent} (COCOeval reads them)")
        kp = finite_numbers(ann["keypoints"], 3 * k, where, "keypoints", f"x, y, v for {k} keypoints", names)
        bad_v = np.flatnonzero(~np.isin(kp[2::3], (0, 1, 2)))
        if bad_v.size:
            j = int(bad_v[0])
            raise ValueError(f"{where}: field 'keypoints' visibility of {names[j]!r} is {kp[3 * j + 2]:g}; "
                             f"expected 0 (not labelled), 1 (occluded) or 2 (visible)")
        box = finite_numbers(ann["bbox"], 4, where, "bbox", "x, y, w, h")
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


@dataclasses.dataclass
class Detections:
    """Person boxes read by :func:`read_detections`.

    ``boxes``: ``(image, [x, y, w, h], score, record)`` per kept box, ``image`` an integer image id or (where
    the record names a ``file_name`` instead) a file name; ``skipped``: dropped records by reason
    (``other_category``, ``low_score``, ``empty_box``); ``file_names``: a dataset object's file name -> id;
    ``category``: a dataset object's keypoint category (``None`` for a detection list); ``best_dropped``: the
    highest score among the records below the score threshold (``None`` when none was).
    """

    source: str
    boxes: list[tuple[int | str, list[float], float, int]]
    skipped: collections.Counter
    file_names: dict[str, int]
    category: dict[str, Any] | None
    best_dropped: float | None = None

    def by_image(self) -> dict[int | str, list[tuple[list[float], float]]]:
        """``image -> [(box, score), ...]`` in file order."""
        out: dict[int | str, list[tuple[list[float], float]]] = collections.defaultdict(list)
        for image, box, score, _ in self.boxes:
            out[image].append((box, score))
        return dict(out)


def read_detections(path: str | Path, *, what: str = "detection file", category_id: int = PERSON_CATEGORY,
                    images: Container[Any] | None = None, images_source: str = "the ground truth",
                    score_threshold: float = 0.0, file_names: bool = False) -> Detections:
    """Person boxes from a COCO detection-results list or a COCO dataset object (see the module docstring).

    Args:
        path: the JSON file (``.gz`` too).
        what: how messages name the file (``"--boxes"``, ``"detection file"``).
        category_id: the person category; records of other categories (a detector's 80) are skipped and
            counted, a file with none of it is refused. A record without ``category_id`` is of this one.
        images: the known image ids; a record of another image is refused (named with ``images_source``).
        score_threshold: records scoring less are skipped (``score`` defaults to 1).
        file_names: a record may name its image by ``file_name`` instead of ``image_id``.

    Boxes with ``w <= 0`` or ``h <= 0`` are dropped with a warning naming them; every other malformed
    record raises ``ValueError`` naming the file, the record and the field.
    """
    source = f"{what} {path}"
    data = read_json(path, what)
    names: dict[str, int] = {}
    category = None
    if isinstance(data, dict) and "annotations" in data:
        names, cats = image_names(data, source), keypoint_categories(data)
        category = cats[0] if cats else None
        records = data["annotations"]
        if not isinstance(records, list) or not all(isinstance(a, dict) for a in records):
            raise ValueError(f"{source}: 'annotations' must be a list of objects")
        records = [dict(a, score=1.0) if not a.get("iscrowd", 0) else None for a in records]
    elif isinstance(data, list):
        records = data
    else:
        raise ValueError(f"{source}: expected a list of detections {{image_id, category_id, bbox, score}} (COCO "
                         f"results format) or a COCO dataset object with 'images' and 'annotations'")
    out = Detections(source, [], collections.Counter(), names, category)
    categories: collections.Counter = collections.Counter()
    empty: list[int] = []
    for i, det in enumerate(records):
        if det is None:  # a crowd region of a dataset object
            continue
        where = f"{source}: record {i}"
        image = _detection_image(det, where, file_names)
        cat = det.get("category_id", category_id)
        categories[cat] += 1
        if cat != category_id:
            out.skipped["other_category"] += 1
            continue
        if images is not None and not isinstance(image, str) and image not in images:
            raise ValueError(f"{where}: field 'image_id' = {image!r} is not in 'images' of {images_source}"
                             + id_hint(det["image_id"], images))
        problem = box_problem(det["bbox"])
        if problem and "not positive" in problem:
            empty.append(i)
            continue
        if problem:
            raise ValueError(f"{where}: 'bbox' {problem}")
        score = det.get("score", 1.0)
        if not _is_number(score) or not math.isfinite(score):
            raise ValueError(f"{where}: field 'score' = {score!r} is not a finite number")
        if score < score_threshold:
            out.skipped["low_score"] += 1
            out.best_dropped = max(float(score), out.best_dropped if out.best_dropped is not None else float(score))
            continue
        out.boxes.append((image, [float(v) for v in det["bbox"]], float(score), i))
    if categories and categories[category_id] == 0:
        raise ValueError(f"{source}: no record has category_id {category_id} (the person category); found category "
                         f"ids {sorted(categories, key=str)}")
    if empty:
        out.skipped["empty_box"] += len(empty)
        log.warning("%s: %d box(es) with w <= 0 or h <= 0 dropped (records %s%s)", source, len(empty),
                    ", ".join(map(str, empty[:10])), ", ..." if len(empty) > 10 else "")
    if out.skipped["low_score"]:
        log.info("%s: dropped %d record(s) with score < %g", source, out.skipped["low_score"], score_threshold)
    return out


def _detection_image(det: Any, where: str, file_names: bool) -> int | str:
    """The image a detection record names: its integer ``image_id`` or, where allowed, its ``file_name``."""
    if not isinstance(det, dict):
        raise ValueError(f"{where}: expected an object, got {type(det).__name__}")
    key = "image_id" if "image_id" in det or not file_names else "file_name"
    missing = [f for f in ("bbox", key) if f not in det]
    if missing:
        also = " (or 'file_name')" if file_names else ""
        raise ValueError(f"{where}: missing field(s) {missing}{also}; a detection is {{image_id, category_id, bbox, score}}")
    if key == "file_name":
        return Path(str(det["file_name"])).name
    value = det["image_id"]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: field 'image_id' = {value!r} is not an integer image id"
                         + (" (write it without quotes)" if isinstance(value, str) and value.strip().isdigit() else ""))
    return value


def keypoint_result(image_id: int, keypoints: Any, score: float, *, category_id: int = PERSON_CATEGORY,
                    bbox: Sequence[float] | None = None, file_name: str | None = None,
                    where: str = "result") -> dict[str, Any]:
    """One COCO keypoint-result record: ``keypoints`` ``(K, 3)`` image-pixel x, y, confidence (rounded to
    1/1000 px), the person ``score``, and optionally its ``bbox`` and ``file_name``.

    ``ValueError`` naming ``where`` and the field for a NaN/inf value (the file would not be valid JSON).
    """
    values = {"keypoints": np.asarray(keypoints, dtype=np.float64).reshape(-1), "score": np.asarray([score], dtype=np.float64)}
    if bbox is not None:
        values["bbox"] = np.asarray(bbox, dtype=np.float64)
    for field, arr in values.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: field {field!r} holds NaN/inf (the model output is not finite: are the "
                             "checkpoint's weights NaN?); a results file would not be valid JSON")
    record: dict[str, Any] = {"image_id": int(image_id), "category_id": int(category_id),
                              "keypoints": [round(float(v), 3) for v in values["keypoints"]], "score": float(score)}
    if bbox is not None:
        record["bbox"] = [round(float(v), 2) for v in values["bbox"]]
    if file_name is not None:
        record["file_name"] = file_name
    return record


def write_keypoint_results(path: str | Path, results: list[dict[str, Any]]) -> Path:
    """COCO results JSON, one record per line (compact but diff-able), written atomically; strict JSON (no NaN)."""
    lines = [json.dumps(r, allow_nan=False) for r in results]
    atomic_write_text(path, "[\n" + ",\n".join(lines) + "\n]\n" if results else "[]\n")
    return Path(path)


def check_keypoint_results(results: Any, coco_gt: COCO, source: str = "results") -> None:
    """Raise ``ValueError`` naming the record and field when keypoint results do not fit the ground truth.

    Every record needs a known ``image_id`` (of the ground truth's JSON type: ``"397133"`` is not
    ``397133``), the ground truth's keypoint ``category_id``, a finite ``score`` and ``3 K`` finite keypoint
    numbers.
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
        absent = [f for f in ("image_id", "category_id", "score", "keypoints") if f not in r]
        if absent:
            raise ValueError(f"{where}: missing field(s) {absent}")
        if r["category_id"] != cat["id"]:
            raise ValueError(f"{where}: field 'category_id' = {r['category_id']!r} but the ground truth's keypoint "
                             f"category is {cat['id']} ({cat.get('name')!r}); is this a file for another category?"
                             + id_hint(r["category_id"], {cat["id"]}))
        if r["image_id"] not in coco_gt.imgs:
            raise ValueError(f"{where}: field 'image_id' = {r['image_id']!r} is not in the ground truth"
                             + id_hint(r["image_id"], coco_gt.imgs))
        if not _is_number(r["score"]) or not math.isfinite(r["score"]):
            raise ValueError(f"{where}: field 'score' = {r['score']!r} is not a finite number")
        finite_numbers(r["keypoints"], 3 * k, where, "keypoints", f"x, y, v for {k} keypoints", names)


def read_keypoint_results(path: str | Path, coco_gt: COCO, score_threshold: float = 0.0) -> list[dict[str, Any]]:
    """Read and check a COCO keypoint-results JSON; records scoring below ``score_threshold`` are dropped
    (the count is logged)."""
    results = read_json(path, "results file")
    check_keypoint_results(results, coco_gt, source=f"results file {path}")
    kept = [r for r in results if r["score"] >= score_threshold]
    if len(kept) < len(results):
        log.info("%s: dropped %d of %d records with score < %g", path, len(results) - len(kept), len(results), score_threshold)
    return kept
