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
- split: the annotated images found in ``images/`` in file order; the last ``num_val`` are held out.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from dspose_graph.io import atomic_write_json, provenance
from dspose_graph.topology.schemas import LSP14

JOINTS_FILE = "joints.mat"
IMAGE_DIR = "images"


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


def lspet_to_coco(root: str | Path, out_dir: str | Path, num_val: int = 50, margin: float = 0.1,
                  limit: int | None = None) -> dict[str, Path]:
    """Write LSPET under ``root`` as ``out_dir/annotations/person_keypoints_{train,val}.json``.

    Only images present in ``root/images`` are listed (``limit`` keeps the first ones). Returns the paths
    ``train_json``, ``val_json`` and ``images`` (the image folder, read in place, for both splits).
    """
    root, out_dir = Path(root), Path(out_dir)
    joints = load_lspet_joints(root / JOINTS_FILE)
    image_dir = root / IMAGE_DIR
    present = [i for i in range(len(joints)) if (image_dir / image_name(i)).is_file()]
    if limit is not None:
        present = present[:limit]
    if len(present) <= num_val or num_val < 1:
        raise ValueError(f"{image_dir}: {len(present)} LSPET images found; need more than num_val={num_val} "
                         "(and num_val >= 1) to split into train and held-out")
    images, annotations = [], []
    for i in present:
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
    val_ids = {img["id"] for img in images[-num_val:]}
    info = provenance(root / JOINTS_FILE, num_val=num_val, margin=margin, images=len(images))
    paths = {"train_json": out_dir / "annotations" / "person_keypoints_train.json",
             "val_json": out_dir / "annotations" / "person_keypoints_val.json", "images": image_dir}
    for split, keep in (("train", lambda i: i not in val_ids), ("val", lambda i: i in val_ids)):
        atomic_write_json(paths[f"{split}_json"], {
            "info": {"description": f"LSP Extended ({split}), converted by dspose_graph.data.lspet", **info},
            "images": [img for img in images if keep(img["id"])],
            "annotations": [a for a in annotations if keep(a["image_id"])],
            "categories": [category],
        })
    return paths


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read the image header ({e})") from e
