"""Dataset folder layouts as the official releases ship them, so a config only names a root folder.

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

LSP Extended (``data.kind: lspet``, read in place; fixed splits train/val/test, ``dspose_graph.data.lspet``)::

    ROOT/joints.mat
    ROOT/images/im00001.jpg ...

See ``docs/datasets.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dspose_graph.data.base import TopDownDataset
from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.data.mpii import SPLITS as MPII_SPLITS
from dspose_graph.data.mpii import MPIIDataset
from topology.annotations import MPII_ANNOTATION_FILES, find_mpii_annotations

COCO_DETECTIONS = "person_detection_results/COCO_{split}2017_detections_AP_H_56_person.json"


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


def build_dataset(kind: str, root: str | Path, split: str, **kwargs: Any) -> TopDownDataset:
    """A dataset from its root folder in the official layout.

    Args:
        kind: ``"coco"`` (any COCO-format keypoint set in the COCO layout), ``"mpii"`` or ``"lspet"``.
        root: dataset root folder.
        split: COCO ``"train"``/``"val"`` (any ``person_keypoints_{split}2017.json``); MPII
            ``"train"``/``"val"``/``"trainval"``; LSPET ``"train"``/``"val"``/``"test"``.
        **kwargs: dataset knobs. ``detections="default"`` picks HRNet's detection file for the split;
            an explicit ``ann_file``/``image_dir`` overrides the layout.
    """
    if kind == "coco":
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
    if kind == "mpii":
        if split not in MPII_SPLITS:
            raise ValueError(f"MPII split must be one of {sorted(MPII_SPLITS)}, got {split!r}")
        found_ann, found_images = mpii_paths(root)
        ann = kwargs.pop("ann_file", None) or found_ann
        images = kwargs.pop("image_dir", None) or found_images
        if ann is None:
            raise FileNotFoundError(f"no MPII annotation file under {root}: expected one of {list(MPII_ANNOTATION_FILES)}")
        return MPIIDataset(ann, images, split=split, **kwargs)
    if kind == "lspet":
        from dspose_graph.data.lspet import LSPETDataset

        given = [k for k in ("ann_file", "image_dir", "detections") if kwargs.get(k)]
        if given:
            raise ValueError(f"LSPET is read from ROOT/joints.mat and ROOT/images with its fixed splits; "
                             f"{', '.join(given)} cannot be set for data.kind 'lspet' (leave data.*_ann/_images empty)")
        for k in ("ann_file", "image_dir", "detections"):
            kwargs.pop(k, None)
        return LSPETDataset(root, split, **kwargs)
    raise ValueError(f"unknown dataset kind {kind!r}: expected one of ['coco', 'mpii', 'lspet']")
