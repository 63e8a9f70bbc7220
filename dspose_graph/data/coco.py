"""COCO-format keypoint datasets (COCO, CrowdPose, AIC, your own): an images folder + annotation json.

Person boxes come from the ground truth or, for evaluation as SimpleBaseline/HRNet/TokenPose do on COCO
val, from a detection-results json (COCO results format: a list of ``{image_id, category_id, bbox,
score}``).

Bad input policy. Structural errors stop loading with a ``ValueError`` naming the file and the record:
malformed json, no keypoint category, a schema of another keypoint count, an annotation or detection
whose ``image_id`` is not in ``images``, a wrong keypoint count, NaN/inf in a box or keypoints, a
detection file with no detection of the person category. Ordinary data that cannot be trained on is
skipped, counted in ``skipped`` and logged once: crowd annotations, annotations without labelled
keypoints (ground-truth boxes only), boxes of zero area after clipping to the image, detections of
other categories or below the score threshold.

Box geometry follows the codec (``data.codec``). Boxes are clipped to the image as HRNet does
(``x2 = min(W - 1, x + max(0, w - 1))``); the crop centre is ``x1 + (x2 - x1) / 2`` in every codec. HRNet
sizes the box ``x2 - x1``; TokenPose ``x2 - x1 + 1`` (its ``clean_bbox``), i.e. the box runs from the
first pixel's left edge to the last pixel's right edge; and TokenPose uses detector boxes unclipped.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO

from dspose_graph.data.base import PersonRecord, TopDownDataset
from dspose_graph.data.codec import get_codec
from dspose_graph.data.transforms import BOX_PADDING
from dspose_graph.io import read_json
from topology.schemas import KeypointSchema

log = logging.getLogger(__name__)


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


def _finite(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


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
        cats = [c for c in self.coco.dataset.get("categories", []) if isinstance(c, dict) and c.get("keypoints")]
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
        self._check_annotations(schema.num_keypoints)
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

    def _check_annotations(self, k: int) -> None:
        for ann in self.coco.dataset["annotations"]:
            where = f"annotation file {self.ann_file}: annotation id {ann.get('id')}"
            if ann.get("image_id") not in self.coco.imgs:
                raise ValueError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            if ann.get("category_id") != self.category_id:
                continue
            kps = ann.get("keypoints")
            if not isinstance(kps, list) or len(kps) != 3 * k:
                got = len(kps) if isinstance(kps, list) else type(kps).__name__
                raise ValueError(f"{where}: 'keypoints' has {got} values, expected {3 * k} ({k} keypoints x 3)")
            if not _finite(kps):
                raise ValueError(f"{where}: 'keypoints' contains NaN, inf or non-numbers")
            box = ann.get("bbox")
            if not isinstance(box, list) or len(box) != 4 or not _finite(box):
                raise ValueError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}")

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
        dets = read_json(path, "detection file")
        if not isinstance(dets, list):
            raise ValueError(f"detection file {path} must be a list of {{image_id, category_id, bbox, score}} (COCO results format)")
        records, categories = [], collections.Counter()
        for i, det in enumerate(dets):
            where = f"detection file {path}: entry {i}"
            if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= det.keys():
                raise ValueError(f"{where}: expected a dict with image_id, category_id, bbox, score, got {det!r:.120}")
            category = det.get("category_id", self.category_id)
            categories[category] += 1
            if category != self.category_id:
                self.skipped["other_category"] += 1
                continue
            if det["image_id"] not in self.coco.imgs:
                raise ValueError(f"{where}: image_id {det['image_id']!r} is not in 'images' of {self.ann_file}")
            box, score = det["bbox"], det["score"]
            if not isinstance(box, list) or len(box) != 4 or not _finite(box) or not _finite([score]):
                raise ValueError(f"{where}: 'bbox' must be 4 finite numbers and 'score' a finite number, got {box!r}, {score!r}")
            if score < score_thr:
                self.skipped["low_score"] += 1
                continue
            record = self._record(det["image_id"], -1, box, score, np.zeros((k, 3), dtype=np.float32))
            if record is not None:
                records.append(record)
        if dets and categories[self.category_id] == 0:
            raise ValueError(
                f"detection file {path}: no detection has category_id {self.category_id} "
                f"(the keypoint category of {self.ann_file}); found category ids {sorted(categories)}"
            )
        return records
