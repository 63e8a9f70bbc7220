"""MPII Human Pose: the per-person annotation json(.gz) + the MPII ``images/`` folder.

The annotation file is read and checked by :func:`dspose_graph.formats.mpii.read_mpii` (one dict per
annotated person; ``isValidation`` splits train, 22,246 persons, and val, 2,958). Val keeps every person, in file order,
so that sample ``i`` is column ``i`` of the official evaluation ground truth
(``detections_our_format.mat``).

Crop box. MPII's ``scale_provided`` is the person height / 200 px. As HRNet/TokenPose do, the centre is
moved down by ``15 * scale_provided`` px and the height padded by ``BOX_PADDING`` (1.25): ``h = 200 * 1.25 * s``; the
width is ``h * input_w / input_h`` (square for the usual 256x256 MPII input).

Pixel frame. MPII coordinates are MATLAB's 1-based pixel indices; like HRNet we subtract 1 from
``objpos`` and every annotated joint on loading, so samples live in the 0-based frame of the decoded
image (flip augmentation mirrors about pixel centres correctly). Predictions mapped back to the image
are therefore 0-based: add ``MPII_INDEX_BASE`` (1) before comparing with the PCKh ground truth.

Visibility. ``joint_self``'s flag is 0 both for occluded and for not-annotated joints; only the latter
are ``[0, 0, 0]``. Like HRNet's MPII files (and the PCKh toolkit, which scores occluded joints) every
annotated joint is a training target: ``meta["keypoints"][:, 2]`` is 2 (visible), 1 (annotated,
occluded) or 0 (not annotated) in COCO's convention, and the target weight is ``v > 0``.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dspose_graph.data.base import PersonRecord, TopDownDataset
from dspose_graph.data.transforms import BOX_PADDING
from dspose_graph.formats.mpii import MPIIPersons, check_split, read_mpii
from dspose_graph.topology.schemas import MPII16, KeypointSchema

log = logging.getLogger(__name__)

MPII_CENTER_SHIFT = 15.0  # px per unit of scale_provided, as in HRNet's MPII loader
# MPII annotations (and the PCKh ground truth) are 1-based MATLAB pixel indices. Samples and their
# ``meta["keypoints"]`` are 0-based; add this to predictions before scoring them with the toolkit's GT.
MPII_INDEX_BASE = 1.0


def mpii_center_scale(objpos: Any, scale_provided: Any, aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre ``(..., 2)`` and padded pixel scale ``(w, h)`` from ``objpos`` ``(..., 2)`` and ``scale_provided`` ``(...)``."""
    objpos = np.asarray(objpos, dtype=np.float64)
    s = np.asarray(scale_provided, dtype=np.float64)
    center = objpos + np.stack([np.zeros_like(s), MPII_CENTER_SHIFT * s], axis=-1)
    h = 200.0 * s * BOX_PADDING
    return center, np.stack([h * aspect_ratio, h], axis=-1)


def _person_keypoints(joints: np.ndarray) -> np.ndarray:
    """``joint_self`` (N, 16, 3) -> (x, y, v) with v = 2 visible, 1 annotated but occluded, 0 not annotated."""
    annotated = ~np.all(joints == 0, axis=-1)
    v = np.where(annotated, np.where(joints[..., 2] > 0, 2.0, 1.0), 0.0)
    return np.concatenate([joints[..., :2], v[..., None]], axis=-1).astype(np.float32)


class MPIIDataset(TopDownDataset):
    """Top-down samples of MPII.

    Args:
        ann_file: ``mpii_annotations.json`` or ``.json.gz``.
        image_dir: the MPII ``images/`` folder.
        split: ``"train"``, ``"val"`` or ``"trainval"`` (by ``isValidation``).
        schema: must have 16 keypoints (default ``MPII16``).
        keep_unannotated: keep training persons without any annotated joint (all-zero targets, weight 0),
            as official TokenPose/HRNet do (default); ``False`` skips them (counted in ``skipped``).
        **kwargs: :class:`TopDownDataset` knobs (``input_size`` defaults to 256x256 here).

    ``val`` always keeps every person so that it stays aligned with the PCKh ground truth.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        split: str = "train",
        schema: KeypointSchema | None = None,
        keep_unannotated: bool = True,
        **kwargs: Any,
    ) -> None:
        check_split(split)
        schema = schema or MPII16
        if schema.num_keypoints != 16:
            raise ValueError(f"MPII has 16 keypoints but schema {schema.name!r} has {schema.num_keypoints}")
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"MPII image folder {self.image_dir} does not exist")
        self.split = split
        self.keep_unannotated = keep_unannotated
        kwargs.setdefault("input_size", (256, 256))
        kwargs.setdefault("heatmap_size", (64, 64))
        aspect = kwargs["input_size"][0] / kwargs["input_size"][1]
        self.skipped: collections.Counter[str] = collections.Counter()
        records = self._records(read_mpii(self.ann_file, split), aspect)
        if self.skipped:
            log.info("%s (%s): %d persons kept, skipped %s", self.ann_file.name, split, len(records), dict(self.skipped))
        super().__init__(records, schema, source=str(self.ann_file), **kwargs)

    def _records(self, persons: MPIIPersons, aspect: float) -> list[PersonRecord]:
        keypoints = _person_keypoints(persons.joints)
        # MATLAB's 1-based pixel frame -> the 0-based frame of decoded images (HRNet does the same).
        keypoints[:, :, :2] -= np.where(keypoints[:, :, 2:] > 0, MPII_INDEX_BASE, 0.0).astype(np.float32)
        keep = (keypoints[:, :, 2] > 0).any(axis=1) | (self.split == "val") | self.keep_unannotated
        self.skipped["no_annotated_joint"] += int((~keep).sum())
        centers, scales = mpii_center_scale(persons.objpos - MPII_INDEX_BASE, persons.scale, aspect)
        return [
            PersonRecord(
                image_file=str(self.image_dir / persons.image_paths[j]), image_id=int(persons.image_ids[j]),
                ann_id=int(persons.records[j]), center=centers[j], scale=scales[j], score=1.0, keypoints=keypoints[j],
            )
            for j in range(len(persons)) if keep[j]
        ]
