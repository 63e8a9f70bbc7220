"""Predicting on files: an image, a folder of images or a video; person boxes from a detection file; COCO results out.

Person boxes come from a detection file (see :func:`load_boxes` for the accepted formats) or, without
one, each image (or frame) is one person box. Outputs in ``out``: ``results.json`` (COCO keypoint
results, one entry per person, written atomically) and the drawn images under ``images/`` or the drawn
video ``<name>_pose.mp4``. In a folder, a file that cannot be read is logged and skipped; the rest is
processed. ``dspose predict`` is the command line of :func:`predict_images` and :func:`predict_video`;
error messages name its options.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from dspose_graph.io import atomic_path, atomic_write_text, read_json
from dspose_graph.predict import Predictor
from topology.schemas import KeypointSchema

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
log = logging.getLogger("dspose.predict")


@dataclasses.dataclass
class PredictionSummary:
    """What a prediction run wrote: ``persons`` results from ``inputs`` images (or frames) into ``results``;
    drawings in ``drawn`` (a folder or a video); ``failed`` lists unreadable files with the reason."""

    persons: int
    inputs: int
    results: Path
    drawn: Path
    failed: list[str]


def list_images(path: Path) -> list[Path]:
    """The image files of a folder (sorted), or the one file given; clear errors for missing or empty input."""
    if not path.exists():
        raise FileNotFoundError(f"--images {path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {path}: the folder contains no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def _name_to_id(coco: dict[str, Any], source: Path) -> dict[str, int]:
    images = coco.get("images")
    if not isinstance(images, list):
        raise ValueError(f"{source}: expected a COCO JSON with an 'images' list of {{'id', 'file_name'}}")
    out = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{source}: images[{i}] needs 'id' and 'file_name', got {im!r}")
        out[Path(im["file_name"]).name] = int(im["id"])
    return out


def coco_schema(coco: dict[str, Any], source: Path) -> KeypointSchema | None:
    """The keypoint schema of a COCO dataset JSON's first keypoint category, if it has one."""
    cats = [c for c in coco.get("categories", []) if isinstance(c, dict) and c.get("keypoints")]
    return KeypointSchema.from_coco_category(cats[0], source=str(source)) if cats else None


def load_boxes(path: Path, det_thr: float = 0.0) -> tuple[dict[Any, list[tuple[list[float], float]]], dict[str, int], KeypointSchema | None]:
    """Person boxes per image from a detection file.

    Accepted formats:
      * COCO detection results: a list of ``{"image_id": int, "bbox": [x, y, w, h], "score": float,
        "category_id": 1}``; ``"file_name"`` may replace ``"image_id"``. Entries with another
        ``category_id`` than 1 (person) are ignored.
      * A COCO dataset JSON (``images``, ``annotations``): its annotation boxes are used with score 1
        (crowd regions skipped), its ``images`` give the file names, its keypoint category the schema.

    Returns ``(boxes, name_to_id, schema)``: ``boxes`` maps an image id (int) or file name (str) to a list
    of ``(box, score)``; ``name_to_id`` is the dataset JSON's file-name mapping (empty for a list).
    """
    data = read_json(path, "--boxes file")
    boxes: dict[Any, list[tuple[list[float], float]]] = defaultdict(list)
    name_to_id: dict[str, int] = {}
    schema = None
    if isinstance(data, dict):
        if "annotations" not in data:
            raise ValueError(f"--boxes {path}: a JSON object must be a COCO dataset with 'images' and 'annotations'")
        name_to_id = _name_to_id(data, path)
        schema = coco_schema(data, path)
        entries = [dict(a, score=1.0) for a in data["annotations"] if not a.get("iscrowd", 0)]
    elif isinstance(data, list):
        entries = data
    else:
        raise ValueError(f"--boxes {path}: expected a list of detections or a COCO dataset object")
    for i, det in enumerate(entries):
        if not isinstance(det, dict) or "bbox" not in det or not ("image_id" in det or "file_name" in det):
            raise ValueError(f"--boxes {path}: entry {i} needs 'bbox' and 'image_id' (or 'file_name'), got {det!r}")
        if det.get("category_id", 1) != 1:
            continue
        bbox = det["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise ValueError(f"--boxes {path}: entry {i} 'bbox' must be [x, y, w, h], got {bbox!r}")
        if bbox[2] <= 0 or bbox[3] <= 0:
            continue
        score = float(det.get("score", 1.0))
        if score < det_thr:
            continue
        key = int(det["image_id"]) if "image_id" in det else Path(str(det["file_name"])).name
        boxes[key].append(([float(v) for v in bbox], score))
    return dict(boxes), name_to_id, schema


def image_id_for(path: Path, name_to_id: dict[str, int], fallback: int) -> int:
    """COCO image id of a file: from the name mapping, else the numeric file stem (COCO naming), else ``fallback``."""
    if path.name in name_to_id:
        return name_to_id[path.name]
    return int(path.stem) if path.stem.isdigit() else fallback


def _check_missing(boxes: dict[Any, Any], known: set[Any], source: str, ignore: bool) -> None:
    missing = sorted((k for k in boxes if k not in known), key=str)
    if not missing:
        return
    msg = (f"--boxes {source}: boxes for {len(missing)} image(s) that are not among the inputs "
           f"(first: {', '.join(map(str, missing[:5]))}); pass --ignore-missing to skip them")
    if not ignore:
        raise ValueError(msg)
    log.warning("%s", msg.split(";")[0] + "; skipped")


def result_entries(persons: list[dict[str, Any]], image_id: int, file_name: str) -> list[dict[str, Any]]:
    """COCO keypoint-result dicts for one image's predictions."""
    return [
        {
            "image_id": int(image_id),
            "category_id": 1,
            "keypoints": [round(float(v), 3) for v in p["keypoints"].reshape(-1)],
            "score": round(float(p["score"]), 5),
            "bbox": [round(float(v), 2) for v in p["box"]],
            "file_name": file_name,
        }
        for p in persons
    ]


def write_results(path: Path, results: list[dict[str, Any]]) -> None:
    """COCO results JSON, one person per line (compact but diff-able), written atomically."""
    atomic_write_text(path, "[\n" + ",\n".join(json.dumps(r) for r in results) + "\n]\n" if results else "[]\n")


def _draw(image: np.ndarray, persons: list[dict[str, Any]], schema: KeypointSchema, thr: float) -> np.ndarray:
    from dspose_graph.viz.skeleton import draw_skeleton

    if not persons:
        return image
    kps = np.stack([p["keypoints"] for p in persons])
    return draw_skeleton(image, kps, schema, thr=thr)


def _write_image(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".jpg",
                           cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _boxes_for(boxes: dict[Any, Any] | None, image_id: int, name: str) -> tuple[list | None, list | None]:
    if boxes is None:
        return None, None
    found = boxes.get(image_id, []) + boxes.get(name, [])
    return [b for b, _ in found], [s for _, s in found]


def predict_images(weights: str | Path, images: str | Path, out: str | Path, *, boxes: str | Path | None = None,
                   coco_json: str | Path | None = None, det_thr: float = 0.0, ignore_missing: bool = False,
                   kpt_thr: float = 0.3, **predictor_options: Any) -> PredictionSummary:
    """Keypoints for an image or a folder of images; ``predictor_options`` go to :class:`Predictor`."""
    files = list_images(Path(images))
    box_map, name_to_id, expected = None, {}, None
    if boxes:
        box_map, name_to_id, expected = load_boxes(Path(boxes), det_thr)
    if coco_json:
        coco = read_json(coco_json, "--coco-json file")
        name_to_id = _name_to_id(coco, Path(coco_json))
        expected = coco_schema(coco, Path(coco_json)) or expected
    ids = {f: image_id_for(f, name_to_id, i) for i, f in enumerate(files)}
    if box_map is not None:
        _check_missing(box_map, set(ids.values()) | {f.name for f in files}, str(boxes), ignore_missing)
    predictor = Predictor(weights, expected_schema=expected, **predictor_options)
    from dspose_graph.data import load_image

    out = Path(out)
    results, failed = [], []
    for f in files:
        try:
            image = load_image(f)
        except (ValueError, FileNotFoundError) as e:
            log.error("skipping %s: %s", f, e)
            failed.append(f"{f}: {e}")
            continue
        box_list, scores = _boxes_for(box_map, ids[f], f.name)
        if box_map is not None and not box_list:
            log.info("%s: no person boxes", f.name)
        persons = predictor.predict(image, box_list, scores) if box_list != [] else []
        results.extend(result_entries(persons, ids[f], f.name))
        _write_image(out / "images" / f.name, _draw(image, persons, predictor.schema, kpt_thr))
    if len(failed) == len(files):
        raise ValueError(f"--images {images}: none of the {len(files)} image(s) could be read: {failed[0]}")
    write_results(out / "results.json", results)
    return PredictionSummary(len(results), len(files) - len(failed), out / "results.json", out / "images", failed)


def read_frames(path: Path, max_frames: int = 0) -> tuple[float, Iterator[np.ndarray]]:
    """Frame rate and an iterator of RGB frames; ``ValueError`` when the file is not a readable video."""
    if not path.is_file():
        raise FileNotFoundError(f"--video {path}: no such file")
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise ValueError(f"--video {path}: OpenCV cannot read a frame (not a video, or an unsupported codec)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0

    def frames() -> Iterator[np.ndarray]:
        frame, count = first, 0
        try:
            while frame is not None and (max_frames <= 0 or count < max_frames):
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                count += 1
                ok, frame = cap.read()
                frame = frame if ok else None
        finally:
            cap.release()

    return float(fps), frames()


def predict_video(weights: str | Path, video: str | Path, out: str | Path, *, boxes: str | Path | None = None,
                  det_thr: float = 0.0, kpt_thr: float = 0.3, max_frames: int = 0,
                  **predictor_options: Any) -> PredictionSummary:
    """Keypoints for every frame of a video (boxes keyed by frame index), drawn into ``<name>_pose.mp4``."""
    video = Path(video)
    fps, frames = read_frames(video, max_frames)
    box_map, expected = None, None
    if boxes:
        box_map, _, expected = load_boxes(Path(boxes), det_thr)
    predictor = Predictor(weights, expected_schema=expected, **predictor_options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{video.stem}_pose.mp4"
    # VideoWriter picks the container from the suffix, so the partial file keeps ".mp4".
    partial = out / f".{video.stem}_pose.partial.mp4"
    writer, results, index = None, [], 0
    try:
        for index, frame in enumerate(frames):
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise ValueError(f"cannot open a video writer for {target} (mp4v codec)")
            box_list, scores = _boxes_for(box_map, index, f"{video.name}#{index}")
            persons = predictor.predict(frame, box_list, scores) if box_list != [] else []
            results.extend(result_entries(persons, index, f"{video.name}#{index}"))
            drawn = _draw(frame, persons, predictor.schema, kpt_thr)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(partial, target)
    finally:
        if writer is not None:
            writer.release()
        partial.unlink(missing_ok=True)
    if box_map is not None:
        _check_missing(box_map, set(range(index + 1)), str(boxes), True)
    write_results(out / "results.json", results)
    return PredictionSummary(len(results), index + 1, out / "results.json", target, [])
