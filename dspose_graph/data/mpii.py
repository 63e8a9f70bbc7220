"""MPII Human Pose: the per-person annotation json(.gz) + the MPII ``images/`` folder.

The annotation file is the widely used ``mpii_annotations.json`` (one dict per annotated person:
``img_paths``, ``objpos``, ``scale_provided``, ``joint_self`` 16 x [x, y, vis], ``isValidation``);
``isValidation`` splits train (22,246 persons) and val (2,958). Val keeps every person, in file order,
so that sample ``i`` is column ``i`` of the official evaluation ground truth
(``detections_our_format.mat``).

Crop box. MPII's ``scale_provided`` is the person height / 200 px. As HRNet/TokenPose do, the centre is
moved down by ``15 * scale_provided`` px and the height padded by 1.25: ``h = 200 * 1.25 * s``; the
width is ``h * input_w / input_h`` (square for the usual 256x256 MPII input).

Visibility. ``joint_self``'s flag is 0 both for occluded and for not-annotated joints; only the latter
are ``[0, 0, 0]``. Like HRNet's MPII files (and the PCKh toolkit, which scores occluded joints) every
annotated joint is a training target: ``meta["keypoints"][:, 2]`` is 2 (visible), 1 (annotated,
occluded) or 0 (not annotated) in COCO's convention, and the target weight is ``v > 0``.
"""

from __future__ import annotations

import collections
import gzip
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from dspose_graph.data.base import PersonRecord, TopDownDataset
from topology.schemas import MPII16, KeypointSchema

log = logging.getLogger(__name__)

SPLITS = {"train": (0,), "val": (1,), "trainval": (0, 1)}
MPII_PADDING = 1.25
MPII_CENTER_SHIFT = 15.0  # px per unit of scale_provided, as in HRNet's MPII loader


def read_mpii_annotations(path: str | Path) -> list[dict[str, Any]]:
    """The list of person dicts of an ``mpii_annotations.json`` or ``.json.gz``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MPII annotation file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as e:
        raise ValueError(f"MPII annotation file {path} is not valid (gzipped) JSON ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"MPII annotation file {path} must hold a list of person dicts, got {type(data).__name__}")
    return data


def mpii_center_scale(objpos: Any, scale_provided: float, aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre and padded pixel scale ``(w, h)`` from MPII's ``objpos`` and ``scale_provided``."""
    center = np.array([float(objpos[0]), float(objpos[1]) + MPII_CENTER_SHIFT * scale_provided], dtype=np.float64)
    h = 200.0 * scale_provided * MPII_PADDING
    return center, np.array([h * aspect_ratio, h], dtype=np.float64)


def _person_keypoints(joints: np.ndarray) -> np.ndarray:
    """``joint_self`` (16, 3) -> (x, y, v) with v = 2 visible, 1 annotated but occluded, 0 not annotated."""
    annotated = ~np.all(joints == 0, axis=1)
    v = np.where(annotated, np.where(joints[:, 2] > 0, 2.0, 1.0), 0.0)
    return np.concatenate([joints[:, :2], v[:, None]], axis=1).astype(np.float32)


class MPIIDataset(TopDownDataset):
    """Top-down samples of MPII.

    Args:
        ann_file: ``mpii_annotations.json`` or ``.json.gz``.
        image_dir: the MPII ``images/`` folder.
        split: ``"train"``, ``"val"`` or ``"trainval"`` (by ``isValidation``).
        schema: must have 16 keypoints (default ``MPII16``).
        **kwargs: :class:`TopDownDataset` knobs (``input_size`` defaults to 256x256 here).

    Training splits skip persons without any annotated joint (counted in ``skipped``); ``val`` keeps
    every person so that it stays aligned with the PCKh ground truth.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        split: str = "train",
        schema: KeypointSchema | None = None,
        **kwargs: Any,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"MPII split must be one of {sorted(SPLITS)}, got {split!r}")
        schema = schema or MPII16
        if schema.num_keypoints != 16:
            raise ValueError(f"MPII has 16 keypoints but schema {schema.name!r} has {schema.num_keypoints}")
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"MPII image folder {self.image_dir} does not exist")
        self.split = split
        kwargs.setdefault("input_size", (256, 256))
        kwargs.setdefault("heatmap_size", (64, 64))
        aspect = kwargs["input_size"][0] / kwargs["input_size"][1]
        self.skipped: collections.Counter[str] = collections.Counter()
        records = self._records(read_mpii_annotations(self.ann_file), aspect)
        if self.skipped:
            log.info("%s (%s): %d persons kept, skipped %s", self.ann_file.name, split, len(records), dict(self.skipped))
        super().__init__(records, schema, source=str(self.ann_file), **kwargs)

    def _records(self, people: list[Any], aspect: float) -> list[PersonRecord]:
        wanted = SPLITS[self.split]
        records = []
        for i, person in enumerate(people):
            where = f"MPII annotation file {self.ann_file}: record {i}"
            if not isinstance(person, dict):
                raise ValueError(f"{where}: expected a dict, got {type(person).__name__}")
            missing = {"img_paths", "objpos", "scale_provided", "joint_self", "isValidation"} - person.keys()
            if missing:
                raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
            if int(person["isValidation"]) not in wanted:
                continue
            joints = np.asarray(person["joint_self"], dtype=np.float64)
            if joints.shape != (16, 3):
                raise ValueError(f"{where}: 'joint_self' has shape {joints.shape}, expected (16, 3)")
            scale = person["scale_provided"]
            values = [*np.ravel(joints), *person["objpos"], scale]
            if len(person["objpos"]) != 2 or not all(math.isfinite(float(v)) for v in values):
                raise ValueError(f"{where}: 'joint_self', 'objpos' or 'scale_provided' has NaN/inf or a wrong length")
            if scale <= 0:
                raise ValueError(f"{where}: 'scale_provided' must be positive, got {scale}")
            keypoints = _person_keypoints(joints)
            if self.split != "val" and not (keypoints[:, 2] > 0).any():
                self.skipped["no_annotated_joint"] += 1
                continue
            center, pixel_scale = mpii_center_scale(person["objpos"], float(scale), aspect)
            records.append(PersonRecord(
                image_file=str(self.image_dir / person["img_paths"]),
                image_id=int(person.get("annolist_index", -1)), ann_id=i,
                center=center, scale=pixel_scale, score=1.0, keypoints=keypoints,
            ))
        return records
