"""Predicting on files: an image, a folder of images or a video; person boxes from a detection file; COCO results out.

Person boxes come from a detection file (see :func:`load_boxes` for the accepted formats), from a
:class:`~dspose_graph.detect.PersonDetector`, or, without either, each image (or frame) is one person box
(with a warning). Outputs in ``out``: ``results.json`` (COCO keypoint results, one entry per person) and
the drawn images under ``images/`` or the drawn video ``<name>_pose.mp4``. They are written into a
temporary folder inside ``out`` and moved into place only when the whole run succeeded, replacing the
previous run's ``results.json`` and ``images/``: a run that fails half way leaves ``out`` as it was. The
box file is checked whole before the model is loaded. In a folder, a file that cannot be read (truncated
JPEGs included) is logged and skipped; the rest is processed. ``dspose predict`` is the command line of
:func:`predict_images` and :func:`predict_video`; error messages name its options.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from dspose_graph.io import atomic_path, atomic_write_text, check_output_dir, read_json
from dspose_graph.predict import Predictor, box_problem
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
        out[Path(str(im["file_name"])).name] = _image_key({"image_id": im["id"]}, f"{source}: images[{i}]")
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
        annotations = data["annotations"]
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise ValueError(f"--boxes {path}: 'annotations' must be a list of objects")
        entries = [dict(a, score=1.0) for a in annotations if not a.get("iscrowd", 0)]
    elif isinstance(data, list):
        entries = data
    else:
        raise ValueError(f"--boxes {path}: expected a list of detections or a COCO dataset object")
    empty: list[int] = []
    below: list[float] = []
    for i, det in enumerate(entries):
        where = f"--boxes {path}: entry {i}"
        if not isinstance(det, dict) or "bbox" not in det or not ("image_id" in det or "file_name" in det):
            raise ValueError(f"{where} needs 'bbox' and 'image_id' (or 'file_name'), got {det!r}")
        if det.get("category_id", 1) != 1:
            continue
        bbox = det["bbox"]
        problem = box_problem(bbox) if isinstance(bbox, list) else f"must be [x, y, w, h], got {bbox!r}"
        if problem and "not positive" in problem:
            empty.append(i)
            continue
        if problem:
            raise ValueError(f"{where} 'bbox' {problem}")
        score = det.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"{where} field 'score' = {score!r} is not a finite number")
        if score < det_thr:
            below.append(float(score))
            continue
        boxes[_image_key(det, where)].append(([float(v) for v in bbox], float(score)))
    if below and not boxes:
        raise ValueError(f"--det-threshold {det_thr:g} drops every one of the {len(below)} person boxes of {path} "
                         f"(highest score {max(below):g}); lower it")
    if empty:
        log.warning("--boxes %s: %d box(es) with w <= 0 or h <= 0 dropped (entries %s%s)", path, len(empty),
                    ", ".join(map(str, empty[:10])), ", ..." if len(empty) > 10 else "")
    return dict(boxes), name_to_id, schema


def _image_key(det: dict[str, Any], where: str) -> int | str:
    """The image an entry belongs to: its integer ``image_id`` (digit strings accepted) or its file name."""
    if "image_id" not in det:
        return Path(str(det["file_name"])).name
    value = det["image_id"]
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        field = "id" if "images[" in where else "image_id"
        raise ValueError(f"{where} field {field!r} = {value!r} is not an integer image id")
    return value


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
    """COCO keypoint-result dicts for one image's predictions; ``ValueError`` for a non-finite value."""
    entries = []
    for i, p in enumerate(persons):
        values = {"keypoints": np.asarray(p["keypoints"], dtype=np.float64).reshape(-1),
                  "score": np.asarray([p["score"]], dtype=np.float64), "bbox": np.asarray(p["box"], dtype=np.float64)}
        for field, arr in values.items():
            if not np.isfinite(arr).all():
                raise ValueError(f"{file_name}: person {i}: field {field!r} holds NaN/inf (the model output is not "
                                 "finite: are the checkpoint's weights NaN?); results.json would not be valid JSON")
        entries.append({"image_id": int(image_id), "category_id": 1,
                        "keypoints": [round(float(v), 3) for v in values["keypoints"]],
                        "score": round(float(p["score"]), 5), "bbox": [round(float(v), 2) for v in values["bbox"]],
                        "file_name": file_name})
    return entries


def write_results(path: Path, results: list[dict[str, Any]]) -> None:
    """COCO results JSON, one person per line (compact but diff-able), written atomically; strict JSON (no NaN)."""
    lines = [json.dumps(r, allow_nan=False) for r in results]
    atomic_write_text(path, "[\n" + ",\n".join(lines) + "\n]\n" if results else "[]\n")


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


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A temporary folder inside ``out`` to write a run into; on success its entries replace those of ``out``.

    On any error (Ctrl-C included) the temporary folder is removed and ``out`` keeps the previous run's
    files (a folder created for the run is removed again), so it never mixes two runs. A replaced folder
    (``images/``) is swapped whole.
    """
    created = not check_output_dir(out).exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".dspose-predict-", dir=out))
    try:
        yield stage
        for entry in sorted(stage.iterdir()):
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                os.replace(target, stage / f".old-{entry.name}")
            os.replace(entry, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


class BoxSource:
    """Where each image's person boxes come from: a box file, a person detector, or the whole image.

    ``detector`` is a :data:`dspose_graph.detect.DETECTORS` name (built here, after every other input was
    checked: its first use downloads weights) or a ready callable ``image -> (boxes, scores)``.
    """

    def __init__(self, box_map: dict[Any, Any] | None = None, detector: Any = None, det_thr: float = 0.5,
                 max_persons: int = 20, device: Any = "cpu") -> None:
        if isinstance(detector, str):
            from dspose_graph.detect import PersonDetector

            detector = PersonDetector(detector, score_threshold=det_thr, max_persons=max_persons, device=device)
        self.box_map, self.detector = box_map, detector
        if box_map is None and detector is None:
            log.warning("no --boxes and no --detector: each image is taken as one person (the whole image); for "
                        "photos of several people pass --detector fasterrcnn or --boxes FILE")

    def __call__(self, image: np.ndarray, image_id: int, name: str) -> tuple[Any, Any]:
        """``(boxes, scores)`` for ``Predictor.predict``: ``(None, None)`` means the whole image."""
        if self.detector is not None:
            return self.detector(image)
        if self.box_map is None:
            return None, None
        found = self.box_map.get(image_id, []) + self.box_map.get(name, [])
        if not found:
            log.info("%s: no person boxes", name)
        return [b for b, _ in found], [s for _, s in found]


def _persons(predictor: Predictor, image: np.ndarray, boxes: Any, scores: Any, name: str) -> list[dict[str, Any]]:
    if boxes is not None and len(boxes) == 0:
        return []
    try:
        return predictor.predict(image, boxes, scores)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def predict_images(weights: str | Path, images: str | Path, out: str | Path, *, boxes: str | Path | None = None,
                   coco_json: str | Path | None = None, det_thr: float = 0.0, ignore_missing: bool = False,
                   kpt_thr: float = 0.3, detector: Any = None, max_persons: int = 20,
                   **predictor_options: Any) -> PredictionSummary:
    """Keypoints for an image or a folder of images; ``predictor_options`` go to :class:`Predictor`.

    ``detector`` (a :data:`~dspose_graph.detect.DETECTORS` name, a :class:`~dspose_graph.detect.PersonDetector`
    or any callable ``image -> (boxes, scores)``) finds the persons when there is no ``boxes`` file; a name is
    built with ``det_thr`` and ``max_persons``.
    """
    out = check_output_dir(Path(out))
    if boxes and detector is not None:
        raise ValueError("--boxes and --detector both give person boxes; pass one of them")
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
    source = BoxSource(box_map, detector, det_thr, max_persons, predictor.device)
    from dspose_graph.data import load_image

    results, failed = [], []
    with staged_output(out) as stage:
        for f in files:
            try:
                image = load_image(f)
            except (ValueError, FileNotFoundError) as e:
                log.error("skipping %s: %s", f, e)
                failed.append(f"{f}: {e}")
                continue
            persons = _persons(predictor, image, *source(image, ids[f], f.name), name=str(f))
            results.extend(result_entries(persons, ids[f], f.name))
            _write_image(stage / "images" / f.name, _draw(image, persons, predictor.schema, kpt_thr))
        if len(failed) == len(files):
            raise ValueError(f"--images {images}: none of the {len(files)} image(s) could be read: {failed[0]}")
        write_results(stage / "results.json", results)
    return PredictionSummary(len(results), len(files) - len(failed), out / "results.json", out / "images", failed)


def read_frames(path: Path, max_frames: int = 0) -> tuple[float, Iterator[np.ndarray]]:
    """Frame rate and an iterator of RGB frames; ``ValueError`` when the file is not a readable video.

    A video that ends before the frame count its header states (a cut download) is read to its end and a
    warning names the frames read and expected.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--video {path}: no such file")
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise ValueError(f"--video {path}: OpenCV cannot read a frame (not a video, or an unsupported codec)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    stated = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    expected = min(stated, max_frames) if max_frames > 0 else stated

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
        if count < expected:
            log.warning("--video %s: read %d of the %d frames its header states; the file is truncated or damaged "
                        "(the frames read are processed)", path, count, expected)

    return float(fps), frames()


def predict_video(weights: str | Path, video: str | Path, out: str | Path, *, boxes: str | Path | None = None,
                  det_thr: float = 0.0, kpt_thr: float = 0.3, max_frames: int = 0, detector: Any = None,
                  max_persons: int = 20, **predictor_options: Any) -> PredictionSummary:
    """Keypoints for every frame of a video (boxes keyed by frame index), drawn into ``<name>_pose.mp4``."""
    out = check_output_dir(Path(out))
    if boxes and detector is not None:
        raise ValueError("--boxes and --detector both give person boxes; pass one of them")
    video = Path(video)
    fps, frames = read_frames(video, max_frames)
    box_map, expected = None, None
    if boxes:
        box_map, _, expected = load_boxes(Path(boxes), det_thr)
    predictor = Predictor(weights, expected_schema=expected, **predictor_options)
    source = BoxSource(box_map, detector, det_thr, max_persons, predictor.device)
    writer, results, index = None, [], 0
    with staged_output(out) as stage:
        # VideoWriter picks the container from the suffix, so the staged file keeps ".mp4".
        staged = stage / f"{video.stem}_pose.mp4"
        try:
            for index, frame in enumerate(frames):
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(staged), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise ValueError(f"cannot open a video writer for {out / staged.name} (mp4v codec)")
                name = f"{video.name}#{index}"
                persons = _persons(predictor, frame, *source(frame, index, name), name=name)
                results.extend(result_entries(persons, index, name))
                writer.write(cv2.cvtColor(_draw(frame, persons, predictor.schema, kpt_thr), cv2.COLOR_RGB2BGR))
        finally:
            if writer is not None:
                writer.release()
        if box_map is not None:
            _check_missing(box_map, set(range(index + 1)), str(boxes), True)
        write_results(stage / "results.json", results)
    return PredictionSummary(len(results), index + 1, out / "results.json", out / staged.name, [])
