"""The kinds of dataset the pipeline reads (:data:`DATASET_KINDS`) and their folder layouts as the official
releases ship them, so that a config only names a kind and a root folder.

COCO 2017 (``cocodataset.org``, with HRNet's person detections)::

    ROOT/annotations/person_keypoints_train2017.json
    ROOT/annotations/person_keypoints_val2017.json
    ROOT/train2017/*.jpg
    ROOT/val2017/*.jpg
    ROOT/person_detection_results/COCO_val2017_detections_AP_H_56_person.json   (optional)

The subset layout of ``coco_mini`` (``annotations/person_keypoints_{split}.json``, ``images/{split}/``)
is recognised too. MPII::

    ROOT/images/*.jpg
    ROOT/annotations/mpii_annotations.json[.gz]   (or ROOT/mpii_annotations.json[.gz])
    ROOT/annotations/detections_our_format.mat    (or ROOT/...; the PCKh toolkit's val ground truth, optional)

LSP Extended (``data.kind: lspet``, read in place; fixed splits train/val/test, ``dspose_graph.data.lspet``)::

    ROOT/joints.mat
    ROOT/images/im00001.jpg ...

See ``docs/datasets.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from dspose_graph.data.base import TopDownDataset
from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.data.lspet import JOINTS_FILE, LSPETDataset
from dspose_graph.data.lspet import SPLITS as LSPET_SPLITS
from dspose_graph.data.mpii import MPIIDataset
from dspose_graph.formats.mpii import MPII_ANNOTATION_FILES, find_mpii_annotations
from dspose_graph.formats.mpii import SPLITS as MPII_SPLITS

COCO_DETECTIONS = "person_detection_results/COCO_{split}2017_detections_AP_H_56_person.json"
MPII_GROUND_TRUTH = ("annotations/detections_our_format.mat", "detections_our_format.mat")
log = logging.getLogger(__name__)


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of a COCO split under ``root`` (2017 or subset layout)."""
    root = Path(root)
    candidates = [
        (root / "annotations" / f"person_keypoints_{split}2017.json", root / f"{split}2017"),
        (root / "annotations" / f"person_keypoints_{split}.json", root / "images" / split),
    ]
    for ann, images in candidates:
        if ann.is_file() and images.is_dir():
            return ann, images
    tried = "; ".join(f"{a} + {i}/" for a, i in candidates)
    raise FileNotFoundError(f"no COCO split {split!r} under {root}: expected one of {tried}")


def mpii_paths(root: str | Path) -> tuple[Path | None, Path]:
    """``(annotation json or None if absent, image folder)`` of an MPII root."""
    root = Path(root)
    return find_mpii_annotations(root), root / "images"


def _build_coco(root: str | Path, split: str, **kwargs: Any) -> TopDownDataset:
    if "ann_file" in kwargs and "image_dir" in kwargs:
        ann, images = Path(kwargs.pop("ann_file")), Path(kwargs.pop("image_dir"))
    else:
        ann, images = coco_paths(root, split)
    if kwargs.get("detections") == "default":
        det = Path(root) / COCO_DETECTIONS.format(split=split)
        if not det.is_file():
            raise FileNotFoundError(f"default COCO detection file {det} does not exist")
        kwargs["detections"] = det
    return CocoKeypointDataset(ann, images, **kwargs)


def _coco_config_paths(root: Path) -> dict[str, str]:
    train_ann, train_images = coco_paths(root, "train")
    val_ann, val_images = coco_paths(root, "val")
    boxes = root / COCO_DETECTIONS.format(split="val")
    if not boxes.is_file():
        log.warning("no person detections at %s: evaluating with ground-truth boxes", boxes)
    return {"train_ann": str(train_ann), "train_images": str(train_images), "val_ann": str(val_ann),
            "val_images": str(val_images), "val_boxes": str(boxes) if boxes.is_file() else ""}


def _build_mpii(root: str | Path, split: str, **kwargs: Any) -> TopDownDataset:
    found_ann, found_images = mpii_paths(root)
    ann = kwargs.pop("ann_file", None) or found_ann
    images = kwargs.pop("image_dir", None) or found_images
    if ann is None:
        raise FileNotFoundError(f"no MPII annotation file under {root}: expected one of {list(MPII_ANNOTATION_FILES)}")
    return MPIIDataset(ann, images, split=split, **kwargs)


def _build_lspet(root: str | Path, split: str, **kwargs: Any) -> TopDownDataset:
    given = [k for k in ("ann_file", "image_dir", "detections") if kwargs.get(k)]
    if given:
        raise ValueError(f"LSPET is read from ROOT/joints.mat and ROOT/images with its fixed splits; "
                         f"{', '.join(given)} cannot be set for data.kind 'lspet' (leave data.*_ann/_images empty)")
    for k in ("ann_file", "image_dir", "detections"):
        kwargs.pop(k, None)
    return LSPETDataset(root, split, **kwargs)


def _lspet_config_paths(root: Path) -> dict[str, str]:
    if not (root / JOINTS_FILE).is_file():
        raise FileNotFoundError(f"no LSPET {JOINTS_FILE} under {root}")
    return {"root": str(root)}


def _mpii_config_paths(root: Path) -> dict[str, str]:
    ann, images = mpii_paths(root)
    if ann is None:
        raise FileNotFoundError(f"no MPII annotation file under {root}: expected one of {list(MPII_ANNOTATION_FILES)}")
    gt = next((root / p for p in MPII_GROUND_TRUTH if (root / p).is_file()), None)
    return {"train_ann": str(ann), "train_images": str(images), "val_ann": str(ann), "val_images": str(images),
            "val_gt": str(gt) if gt else ""}


@dataclasses.dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset (the config's ``data.kind``): how it is built, laid out and scored.

    Attributes:
        build: ``(root, split, **kwargs) -> TopDownDataset``; ``ann_file``/``image_dir`` override the layout.
        config_paths: ``root -> {data.* field: path}`` for a root in the release layout.
        splits: the split names ``build`` accepts (``None``: any name the layout has files for).
        augment: the official augmentation preset (``data.augment: true``).
        scoring: ``"oks"`` (OKS AP against the dataset's own COCO ground truth) or ``"pckh"`` (PCKh against
            the toolkit file ``data.val_gt``); PCK@0.2 and torso PCK@0.2 are computed for every kind.
        metric: the metric that selects the best checkpoint; ``metric_without_gt`` replaces it when
            ``data.val_gt`` is empty (MPII without the toolkit file has no PCKh).
        options: ``data.*`` keys passed on to this kind's dataset as keyword arguments.
        detections: evaluation may take person boxes from a detection file (``data.val_boxes``).
        schema: the keypoint schema a fresh model needs (``None``: the model's default, COCO-17).
    """

    build: Callable[..., TopDownDataset]
    config_paths: Callable[[Path], dict[str, str]]
    splits: tuple[str, ...] | None
    augment: str
    scoring: str
    metric: str
    metric_without_gt: str | None = None
    options: tuple[str, ...] = ()
    detections: bool = False
    schema: str | None = None

    def best_metric(self, has_ground_truth_file: bool) -> str:
        """The metric that selects the best checkpoint."""
        return self.metric if has_ground_truth_file or self.metric_without_gt is None else self.metric_without_gt


DATASET_KINDS: dict[str, DatasetKind] = {
    "coco": DatasetKind(_build_coco, _coco_config_paths, splits=None, augment="coco", scoring="oks", metric="AP",
                        detections=True),
    "mpii": DatasetKind(_build_mpii, _mpii_config_paths, splits=tuple(MPII_SPLITS), augment="mpii", scoring="pckh",
                        metric="PCKh_Mean", metric_without_gt="PCK@0.2", options=("keep_unannotated",), schema="mpii"),
    # LSP papers report torso PCK@0.2; the in-memory COCO index gives OKS AP beside it.
    "lspet": DatasetKind(_build_lspet, _lspet_config_paths, splits=tuple(LSPET_SPLITS), augment="lspet", scoring="oks",
                         metric="torso_PCK@0.2", schema="lsp"),
}


def dataset_kind(kind: str, where: str = "dataset kind") -> DatasetKind:
    """The :data:`DATASET_KINDS` entry ``kind``; ``ValueError`` listing the valid names otherwise."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown {where} {kind!r}: expected one of {sorted(DATASET_KINDS)}")
    return DATASET_KINDS[kind]


def build_dataset(kind: str, root: str | Path, split: str, **kwargs: Any) -> TopDownDataset:
    """A dataset from its root folder in the official layout.

    Args:
        kind: a :data:`DATASET_KINDS` name: ``"coco"`` (any COCO-format keypoint set in the COCO layout),
            ``"mpii"`` or ``"lspet"``.
        root: dataset root folder.
        split: one of the kind's ``splits``: COCO ``"train"``/``"val"`` (any ``person_keypoints_{split}2017.json``
            works); MPII ``"train"``/``"val"``/``"trainval"``; LSPET ``"train"``/``"val"``/``"test"``.
        **kwargs: dataset knobs. ``detections="default"`` picks HRNet's detection file for the COCO split;
            an explicit ``ann_file``/``image_dir`` overrides the layout.
    """
    entry = dataset_kind(kind)
    if entry.splits is not None and split not in entry.splits:
        raise ValueError(f"{kind} split must be one of {list(entry.splits)}, got {split!r}")
    return entry.build(root, split, **kwargs)
