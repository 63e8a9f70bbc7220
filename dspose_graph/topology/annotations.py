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

from dspose_graph.formats.coco import keypoint_annotations, keypoint_categories, load_coco
from dspose_graph.formats.mpii import read_mpii
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
    """Persons of a COCO-format keypoint json, read by :func:`dspose_graph.formats.coco.keypoint_annotations`
    (``v == 0``: not labelled; crowd and empty annotations skipped).

    Person centre is the box centre, scale the longer box side (px).
    """
    path = Path(path)
    schema = get_schema(path)
    coco = load_coco(path)
    category = keypoint_categories(coco.dataset)[0]
    k = schema.num_keypoints
    anns = [a for a in keypoint_annotations(coco, category["id"], k, f"annotation file {path}")
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 1)]
    if not anns:
        raise ValueError(f"annotation file {path}: no non-crowd annotation has keypoints")
    j = np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), k, 3)
    b = np.asarray([a["bbox"] for a in anns], dtype=np.float64)
    annotated = j[..., 2] > 0
    centers = b[:, :2] + b[:, 2:] / 2
    return _finish(schema, path, j[..., :2], annotated, j[..., 2] > 1, centers, b[:, 2:].max(axis=1))
