"""Pose statistics read from raw annotation files (MPII json.gz, any COCO-format keypoint json).

The physical topology only needs, per annotated person, where each joint is, whether it was annotated
at all, and the person's centre and scale. This module turns the two raw formats into that one array
form, checking every record on the way so that a bad file fails with the file, record and field named.

Shapes:
    N: persons, K: keypoints. ``keypoints``: ``(N, K, 2)``; ``annotated``, ``visible``: ``(N, K)`` bool;
    ``centers``: ``(N, 2)``; ``scales``: ``(N,)`` (pixels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dspose_graph.formats.mpii import read_mpii
from dspose_graph.io import read_json
from dspose_graph.topology.schemas import MPII16, KeypointSchema, get_schema

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PoseStatistics:
    """Per-person joint annotations of one dataset split, in array form."""

    schema: KeypointSchema
    keypoints: np.ndarray
    annotated: np.ndarray
    visible: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    source: Path

    @property
    def num_persons(self) -> int:
        return int(self.keypoints.shape[0])


def _check_finite(path: Path, name: str, values: np.ndarray, records: list[int]) -> None:
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: record {records[i]} field {name!r} has NaN/inf values; expected finite numbers")


def _finish(schema: KeypointSchema, path: Path, joints: np.ndarray, annotated: np.ndarray, visible: np.ndarray,
            centers: np.ndarray, scales: np.ndarray) -> PoseStatistics:
    if joints.shape[0] == 0:
        raise ValueError(f"{path}: no person records with keypoints")
    if not annotated.any():
        raise ValueError(f"{path}: all {joints.shape[0]} persons have every joint unannotated; nothing to estimate from")
    if (scales <= 0).any():
        i = int(np.flatnonzero(scales <= 0)[0])
        raise ValueError(f"{path}: person {i} has non-positive scale {scales[i]}; expected a positive person size")
    log.debug("%s: %d persons, %d of %d joints annotated", path, len(joints), annotated.sum(), annotated.size)
    return PoseStatistics(schema, joints, annotated, visible, centers, scales, path)


def load_mpii_statistics(path: str | Path, split: str = "train") -> PoseStatistics:
    """MPII persons of ``split`` (``train``, ``val`` or ``trainval``), read by :func:`dspose_graph.formats.mpii.read_mpii`.

    A joint stored as ``[0, 0, 0]`` is *not annotated*; ``vis == 0`` with coordinates is annotated but
    occluded. Person centre is ``objpos``, scale ``scale_provided * 200`` px (the box height).
    """
    persons = read_mpii(path, split)
    if not len(persons):
        raise ValueError(f"MPII annotation file {path}: no person records in split {split!r}")
    annotated = persons.annotated
    return _finish(MPII16, Path(path), persons.joints[..., :2], annotated, annotated & (persons.joints[..., 2] > 0),
                   persons.objpos, persons.scale * 200.0)


def load_coco_statistics(path: str | Path) -> PoseStatistics:
    """Persons of a COCO-format keypoint json (``v == 0``: not labelled; crowd and empty annotations skipped).

    Person centre is the box centre, scale the longer box side (px).
    """
    path = Path(path)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: expected a COCO-format object with an 'annotations' list")
    schema = get_schema(path)
    k = schema.num_keypoints
    joints, boxes, records = [], [], []
    for r, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise ValueError(f"{path}: annotations[{r}] is not an object")
        if ann.get("iscrowd", 0) or not ann.get("num_keypoints", 1):
            continue
        try:
            kp = np.asarray(ann.get("keypoints", []), dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: annotations[{r}] field 'keypoints' is not a list of numbers ({e})") from None
        if kp.size != 3 * k:
            raise ValueError(f"{path}: annotations[{r}] field 'keypoints' has {kp.size} numbers; expected {3 * k} ({k} x [x, y, v])")
        try:
            box = np.asarray(ann.get("bbox", []), dtype=np.float64)
        except (TypeError, ValueError):
            box = np.empty(0)
        if box.shape != (4,):
            raise ValueError(f"{path}: annotations[{r}] field 'bbox' must be [x, y, w, h]")
        joints.append(kp.reshape(k, 3))
        boxes.append(box)
        records.append(r)
    if not joints:
        raise ValueError(f"{path}: no non-crowd annotation has keypoints")
    j, b = np.stack(joints), np.stack(boxes)
    _check_finite(path, "keypoints", j, records)
    _check_finite(path, "bbox", b, records)
    annotated = j[..., 2] > 0
    centers = b[:, :2] + b[:, 2:] / 2
    return _finish(schema, path, j[..., :2], annotated, j[..., 2] > 1, centers, b[:, 2:].max(axis=1))
