"""COCO-format keypoint datasets (COCO, CrowdPose, AIC, your own): an images folder + annotation json.

Person boxes come from the ground truth or, for evaluation as SimpleBaseline/HRNet/TokenPose do on COCO
val, from a detection-results json (COCO results format: a list of ``{image_id, category_id, bbox,
score}``, read by :func:`dspose_graph.formats.coco.read_detections`).

Bad input policy. Structural errors stop loading with a ``ValueError`` naming the file and the record:
malformed json, no keypoint category, a schema of another keypoint count, an annotation or detection
whose ``image_id`` is not in ``images``, a wrong keypoint count, NaN/inf in a box or keypoints, a
detection file with no detection of the person category. Ordinary data that cannot be trained on is
skipped, counted in ``skipped`` and logged once: crowd annotations, annotations without labelled
keypoints (ground-truth boxes only), boxes of zero area after clipping to the image, detections of
other categories, below the score threshold or with ``w <= 0`` or ``h <= 0``.

Box geometry follows the codec (``data.codec``). Boxes are clipped to the image as HRNet does
(``x2 = min(W - 1, x + max(0, w - 1))``); the crop centre is ``x1 + (x2 - x1) / 2`` in every codec. HRNet
sizes the box ``x2 - x1``; TokenPose ``x2 - x1 + 1`` (its ``clean_bbox``), i.e. the box runs from the
first pixel's left edge to the last pixel's right edge; and TokenPose uses detector boxes unclipped.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO

from dspose_graph.data.base import PersonRecord, TopDownDataset
from dspose_graph.data.codec import get_codec
from dspose_graph.data.transforms import BOX_PADDING
from dspose_graph.formats.coco import keypoint_annotations, keypoint_categories, load_coco, read_detections
from dspose_graph.topology.schemas import KeypointSchema

log = logging.getLogger(__name__)


class CocoKeypointDataset(TopDownDataset):
    """Top-down samples of a COCO-format keypoint dataset.

    Args:
        ann_file: COCO-format keypoint json.
        image_dir: folder holding the ``file_name`` of each image.
        coco: the annotation file's content as a dict built in memory (e.g. by ``data.lspet``); ``ann_file``
            then only names it in messages.
        detections: optional detection-results json; its boxes replace the ground-truth ones.
        det_score_thr: keep detections with ``score >= det_score_thr``.
        schema: keypoint schema; default from the json's keypoint category.
        padding: box padding factor (``BOX_PADDING``, 1.25).
        min_keypoints: ground-truth annotations with fewer labelled keypoints are skipped.
        **kwargs: :class:`TopDownDataset` knobs (``input_size``, ``heatmap_size``, ``train``, ``sigma``,
            ``codec``, ``unbiased``, ``augment``, ``on_bad_image``, ``seed``).

    Attributes:
        coco: the ``pycocotools`` index of ``ann_file`` (the evaluation ground truth; a training split reads it
            again when asked, see :attr:`coco`).
        category_id: id of the keypoint category used.
        skipped: ``Counter`` of skipped annotations/detections by reason.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        coco: dict[str, Any] | None = None,
        detections: str | Path | None = None,
        det_score_thr: float = 0.0,
        schema: KeypointSchema | None = None,
        padding: float = BOX_PADDING,
        min_keypoints: int = 1,
        **kwargs: Any,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist (annotations: {self.ann_file})")
        self._coco_data = coco  # an in-memory source is kept: the index below is rebuilt from it when dropped
        self._coco: COCO | None = load_coco(self.ann_file, coco)
        cats = keypoint_categories(self.coco.dataset)
        if not cats:
            raise ValueError(f"annotation file {self.ann_file}: no entry of 'categories' has a 'keypoints' list")
        category = cats[0]
        self.category_id = category["id"]
        own = KeypointSchema.from_coco_category(category, source=str(self.ann_file))
        if schema is not None and schema.num_keypoints != own.num_keypoints:
            raise ValueError(
                f"annotation file {self.ann_file}: category {category.get('name')!r} has {own.num_keypoints} keypoints "
                f"but schema {schema.name!r} has {schema.num_keypoints}"
            )
        schema = schema or own
        self.padding = padding
        self.min_keypoints = min_keypoints
        self.skipped: collections.Counter[str] = collections.Counter()
        aspect = kwargs.get("input_size", (192, 256))
        self._aspect = aspect[0] / aspect[1]
        self._codec = get_codec(kwargs.get("codec"))
        keypoint_annotations(self.coco, self.category_id, schema.num_keypoints, f"annotation file {self.ann_file}")
        if detections is None:
            records = self._gt_records(schema.num_keypoints)
        else:
            records = self._det_records(Path(detections), det_score_thr, schema.num_keypoints)
        if self.skipped:
            log.info("%s: %d person boxes kept, skipped %s", self.ann_file.name, len(records), dict(self.skipped))
        super().__init__(records, schema, source=str(self.ann_file), **kwargs)
        if self.train:
            # Training needs only the records: the index (COCO train: 250k annotation dicts) would be copied
            # page by page into every forked DataLoader worker (see RecordTable).
            self._coco = None

    @property
    def coco(self) -> COCO:
        """The ``pycocotools`` index of ``ann_file``: kept by an evaluation split (its ground truth), dropped by a
        training split once its records are built and read again from the file when asked for."""
        if self._coco is None:
            self._coco = load_coco(self.ann_file, self._coco_data)
        return self._coco

    def _record(self, image_id: int, ann_id: int, box: Sequence[float], score: float, keypoints: np.ndarray) -> PersonRecord | None:
        img = self.coco.imgs[image_id]
        center_scale = self._codec.center_scale(box, (img.get("width"), img.get("height")), self._aspect,
                                                self.padding, detection=ann_id < 0)
        if center_scale is None:
            self.skipped["zero_area_box"] += 1
            return None
        center, scale = center_scale
        return PersonRecord(
            image_file=str(self.image_dir / img["file_name"]), image_id=int(image_id), ann_id=int(ann_id),
            center=center, scale=scale, score=float(score), keypoints=keypoints,
        )

    def _gt_records(self, k: int) -> list[PersonRecord]:
        records = []
        for image_id in sorted(self.coco.imgs):
            for ann in self.coco.imgToAnns.get(image_id, []):
                if ann.get("category_id") != self.category_id:
                    continue
                if ann.get("iscrowd", 0):
                    self.skipped["crowd"] += 1
                    continue
                kps = np.asarray(ann["keypoints"], dtype=np.float32).reshape(k, 3)
                if int((kps[:, 2] > 0).sum()) < self.min_keypoints:
                    self.skipped["too_few_keypoints"] += 1
                    continue
                record = self._record(image_id, ann["id"], ann["bbox"], 1.0, kps)
                if record is not None:
                    records.append(record)
        return records

    def _det_records(self, path: Path, score_thr: float, k: int) -> list[PersonRecord]:
        dets = read_detections(path, category_id=self.category_id, images=self.coco.imgs, images_source=str(self.ann_file),
                               score_threshold=score_thr)
        self.skipped.update(dets.skipped)
        records = [self._record(image_id, -1, box, score, np.zeros((k, 3), dtype=np.float32))
                   for image_id, box, score, _ in dets.boxes]
        return [r for r in records if r is not None]
