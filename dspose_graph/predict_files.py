"""Predicting on files: an image, a folder of images or a video; person boxes from a detection file; COCO results out.

Person boxes come from a detection file (read by :func:`dspose_graph.formats.coco.read_detections`), from a
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
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from dspose_graph.formats.coco import image_names, keypoint_categories, keypoint_result, read_detections, write_keypoint_results
from dspose_graph.io import atomic_path, check_output_dir, read_json
from dspose_graph.models.runtime import autocast_dtype
from dspose_graph.predict import Predictor
from dspose_graph.topology.schemas import KeypointSchema

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


def check_prediction_options(*, batch_size: int = 32, max_frames: int = 0, det_thr: float | None = None,
                             kpt_thr: float = 0.3, detector: str | None = None, max_persons: int | None = None,
                             precision: str = "fp32", device: str = "cpu") -> None:
    """Refuse impossible option values of :func:`predict_images` / :func:`predict_video`, naming ``dspose
    predict``'s option, before anything is read or written. ``det_thr`` and ``max_persons`` are ``None`` where
    the caller left them to their defaults."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if max_frames < 0:
        raise ValueError(f"--max-frames must be >= 0 (0 = all frames), got {max_frames}")
    for option, value in (("--det-threshold", det_thr), ("--kpt-thr", kpt_thr)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{option} must be a finite number, got {value}")
    if detector is None and max_persons is not None:
        raise ValueError("--max-persons selects the persons of --detector; with --boxes, use --det-threshold")
    if det_thr is not None and not 0.0 <= det_thr <= 1.0:
        raise ValueError(f"--det-threshold must be in [0, 1] (a detection score), got {det_thr}")
    if detector is not None:
        if max_persons is not None and max_persons < 1:
            raise ValueError(f"--max-persons must be >= 1, got {max_persons}")
    try:
        autocast_dtype(precision, device)
    except ValueError as e:
        raise ValueError(f"--precision {precision}: {e}") from None


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


def coco_schema(data: dict[str, Any], source: Path) -> KeypointSchema | None:
    """The keypoint schema of a COCO dataset JSON's first keypoint category, if it has one."""
    cats = keypoint_categories(data)
    return KeypointSchema.from_coco_category(cats[0], source=str(source)) if cats else None


def load_boxes(path: Path, det_thr: float = 0.0) -> tuple[dict[Any, list[tuple[list[float], float]]], dict[str, int], KeypointSchema | None]:
    """Person boxes per image from a detection file (:func:`dspose_graph.formats.coco.read_detections`:
    a COCO detection-results list, ``file_name`` allowed in place of ``image_id``, or a COCO dataset JSON).

    Returns ``(boxes, name_to_id, schema)``: ``boxes`` maps an image id (int) or file name (str) to a list
    of ``(box, score)``; ``name_to_id`` is the dataset JSON's file-name mapping (empty for a list); ``schema``
    its keypoint category's.
    """
    dets = read_detections(path, what="--boxes", score_threshold=det_thr, file_names=True)
    if dets.best_dropped is not None and not dets.boxes:
        raise ValueError(f"--det-threshold {det_thr:g} drops every one of the {dets.skipped['low_score']} person boxes "
                         f"of {path} (highest score {dets.best_dropped:g}); lower it")
    schema = (KeypointSchema.from_coco_category(dets.category, source=str(path))
              if dets.category is not None else None)
    return dets.by_image(), dets.file_names, schema


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
    """COCO keypoint-result records for one image's predictions; ``ValueError`` for a non-finite value."""
    return [keypoint_result(image_id, p["keypoints"], p["score"], bbox=p["box"], file_name=file_name,
                            where=f"{file_name}: person {i}") for i, p in enumerate(persons)]


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
        name_to_id = image_names(coco, f"--coco-json {coco_json}")
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
        write_keypoint_results(stage / "results.json", results)
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
        write_keypoint_results(stage / "results.json", results)
    return PredictionSummary(len(results), index + 1, out / "results.json", out / staged.name, [])
