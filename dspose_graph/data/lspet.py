"""LSP Extended (Johnson & Everingham, CVPR 2011) as a COCO-format keypoint set.

The release is one ``joints.mat`` (key ``joints``, ``(14, 3, N)`` = joint, ``(x, y, visible)``, image;
image ``imNNNNN.jpg`` is column ``NNNNN - 1``) and a folder of images, one person each. Writing it out as
COCO-format annotation files (images stay where they are) lets everything built for COCO, the dataset,
pycocotools' OKS AP and the demo, use it unchanged::

    ROOT/joints.mat
    ROOT/images/im00001.jpg ...

Conversion rules (``docs/datasets.md``):

- keypoint flags: ``visible == 1`` -> COCO ``v = 2``; ``visible == 0`` inside the image -> ``v = 1``
  (labelled, occluded); ``visible == 0`` outside the image (LSPET's flag for cut-off joints) -> ``v = 0``
  with ``x = y = 0``, as COCO writes unlabelled keypoints;
- ``bbox``: the extent of the labelled joints, widened by ``margin`` of its size on every side and
  clipped to the image; ``area`` = the box area (LSPET has no segmentation; OKS uses it as the scale);
- splits (:data:`SPLITS`, fixed for every tool): train = images 1-9,000, val = 9,001-9,500, test =
  9,501-10,000 (kept aside for acceptance checks; its images are not in the shared data folder).

``data.kind: lspet`` (:class:`LSPETDataset`) reads ``joints.mat`` and the images in place; :func:`lspet_to_coco`
writes the same annotations as COCO files for other tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.io import atomic_write_json, provenance
from topology.schemas import LSP14

JOINTS_FILE = "joints.mat"
IMAGE_DIR = "images"
# 1-based first and last image of each fixed split (shared/data/MANIFEST.md).
SPLITS = {"train": (1, 9000), "val": (9001, 9500), "test": (9501, 10000)}


def load_lspet_joints(path: str | Path) -> np.ndarray:
    """``(N, 14, 3)`` float64 ``(x, y, visible)`` per image from an LSPET ``joints.mat``."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LSPET joints file {path} does not exist")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError on damaged files
        raise ValueError(f"{path}: cannot read as a MATLAB file ({e})") from e
    if "joints" not in mat:
        raise ValueError(f"{path}: no variable 'joints' (found {sorted(k for k in mat if not k.startswith('__'))})")
    joints = np.asarray(mat["joints"], dtype=np.float64)
    if joints.ndim != 3 or joints.shape[:2] != (LSP14.num_keypoints, 3):
        raise ValueError(f"{path}: field 'joints' has shape {joints.shape}; expected (14, 3, N) "
                         "(LSPET layout; the original LSP file is (3, 14, N) with an inverted flag)")
    joints = joints.transpose(2, 0, 1)
    if not np.isfinite(joints).all():
        bad = int(np.argwhere(~np.isfinite(joints))[0][0])
        raise ValueError(f"{path}: field 'joints' of image {bad + 1} holds a non-finite value")
    flags = joints[..., 2]
    if not np.isin(flags, (0.0, 1.0)).all():
        bad = int(np.argwhere(~np.isin(flags, (0.0, 1.0)))[0][0])
        raise ValueError(f"{path}: field 'joints' of image {bad + 1} has a visibility flag other than 0/1")
    return joints


def image_name(index: int) -> str:
    """File name of image ``index`` (0-based): ``im00001.jpg`` for 0."""
    return f"im{index + 1:05d}.jpg"


def coco_keypoints(joints: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(14, 3)`` COCO ``(x, y, v)`` of one image's LSPET joints (see the module's conversion rules)."""
    xy, visible = joints[:, :2], joints[:, 2] > 0
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    v = np.where(visible, 2, np.where(inside, 1, 0))
    out = np.zeros((len(joints), 3))
    out[v > 0, :2] = xy[v > 0]
    out[:, 2] = v
    return out


def joints_box(keypoints: np.ndarray, width: int, height: int, margin: float = 0.1) -> list[float] | None:
    """COCO ``[x, y, w, h]`` around the labelled keypoints, widened by ``margin`` per side, clipped."""
    xy = keypoints[keypoints[:, 2] > 0, :2]
    if len(xy) < 2:
        return None
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = margin * (hi - lo)
    x0, y0 = np.maximum(lo - pad, 0.0)
    x1, y1 = np.minimum(hi + pad, [width - 1, height - 1])
    if x1 <= x0 or y1 <= y0:
        return None
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def split_indices(split: str, count: int = 10000) -> range:
    """0-based joints columns of a fixed LSPET split (:data:`SPLITS`), cut to the ``count`` columns present."""
    if split not in SPLITS:
        raise ValueError(f"unknown LSPET split {split!r}; valid: {', '.join(SPLITS)} (train = images 1-9,000, "
                         "val = 9,001-9,500, test = 9,501-10,000)")
    first, last = SPLITS[split]
    return range(first - 1, min(last, count))


def lspet_coco(root: str | Path, split: str, margin: float = 0.1, limit: int | None = None) -> dict[str, Any]:
    """A fixed split of LSPET under ``root`` as a COCO-format dict (images stay in ``root/images``).

    Every image of the split must be present: a missing one is a ``FileNotFoundError`` naming it (the test
    split's images are kept aside on purpose, so it exists only where they were given back). ``limit`` keeps
    the split's first images (small runs and tests).
    """
    root = Path(root)
    joints = load_lspet_joints(root / JOINTS_FILE)
    indices = list(split_indices(split, len(joints)))[:limit]
    image_dir = root / IMAGE_DIR
    missing = [image_name(i) for i in indices if not (image_dir / image_name(i)).is_file()]
    if missing:
        raise FileNotFoundError(f"{image_dir}: {len(missing)} image(s) of LSPET split {split!r} are missing (first: "
                                f"{missing[0]}); the split needs images {image_name(indices[0])} to "
                                f"{image_name(indices[-1])}")
    images, annotations = [], []
    for i in indices:
        name = image_name(i)
        width, height = _image_size(image_dir / name)
        kp = coco_keypoints(joints[i], width, height)
        box = joints_box(kp, width, height, margin)
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        if box is None:
            continue
        annotations.append({
            "id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "bbox": box,
            "area": box[2] * box[3], "keypoints": [round(float(v), 3) for v in kp.reshape(-1)],
            "num_keypoints": int((kp[:, 2] > 0).sum()),
        })
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(LSP14.keypoints),
                "skeleton": [[a + 1, b + 1] for a, b in LSP14.skeleton]}
    info = provenance(root / JOINTS_FILE, split=split, margin=margin, images=len(images))
    return {"info": {"description": f"LSP Extended ({split}), converted by dspose_graph.data.lspet", **info},
            "images": images, "annotations": annotations, "categories": [category]}


def lspet_to_coco(root: str | Path, out_dir: str | Path, splits: Sequence[str] = ("train", "val"),
                  margin: float = 0.1, limit: int | None = None) -> dict[str, Path]:
    """Write LSPET's fixed ``splits`` as ``out_dir/annotations/person_keypoints_{split}.json`` (for other tools;
    ``data.kind: lspet`` reads ``joints.mat`` directly). Returns ``{split}_json`` paths and ``images``.

    Every split is built (and so checked) before the first file is written.
    """
    root, out_dir = Path(root), Path(out_dir)
    built = {split: lspet_coco(root, split, margin, limit) for split in splits}
    paths: dict[str, Path] = {"images": root / IMAGE_DIR}
    for split, data in built.items():
        paths[f"{split}_json"] = out_dir / "annotations" / f"person_keypoints_{split}.json"
        atomic_write_json(paths[f"{split}_json"], data)
    return paths


class LSPETDataset(CocoKeypointDataset):
    """Top-down samples of one fixed LSPET split, read in place from ``root/joints.mat`` and ``root/images``.

    Args:
        root: the LSPET folder (``joints.mat`` + ``images/``).
        split: ``"train"`` (images 1-9,000), ``"val"`` (9,001-9,500) or ``"test"`` (9,501-10,000).
        margin: box margin around the labelled joints (see the module's conversion rules).
        limit: keep the split's first ``limit`` images.
        **kwargs: :class:`~dspose_graph.data.coco.CocoKeypointDataset` knobs (``input_size``, ``train``, ...).
    """

    def __init__(self, root: str | Path, split: str = "train", *, margin: float = 0.1, limit: int | None = None,
                 **kwargs: Any) -> None:
        root = Path(root)
        self.split = split
        data = lspet_coco(root, split, margin, limit)
        super().__init__(f"{root / JOINTS_FILE}[{split}]", root / IMAGE_DIR, coco=data, **kwargs)


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read the image header ({e})") from e
