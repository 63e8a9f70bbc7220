"""MPII PCKh on the validation set, computed as the official MPII toolkit does.

Ground truth is the standard ``detections_our_format.mat`` (Tompson et al. validation split, 2,958 persons,
MPII joint order, original-image pixels in MATLAB's 1-based frame). The rules follow the toolkit's
``evaluatePCKh.m`` / ``getDistPCKh.m`` / ``computePCK.m``:

- head size = ``0.6 * || headbox (x2, y2) - headbox (x1, y1) ||`` (``util_get_head_size``, ``SC_BIAS``);
- a joint is correct when ``distance / head size <= threshold`` (``computePCK`` uses ``<=``);
- joints marked ``jnt_missing`` have no ground truth and are left out of every count;
- per-joint PCKh = 100 * correct / annotated.

**Mean** is the toolkit's "Total": correct / annotated pooled over all 14 evaluated joints (pelvis and
thorax excluded, as their ground truth is derived from the hips and shoulders). HRNet, TokenPose and the
DSPose paper report this number (HRNet: ``np.sum(PCKh * jnt_ratio)``). Some scripts (bearpaw/pytorch-pose
``eval_PCKh.py``) print the *unweighted* mean of the 14 per-joint values instead; it is returned as
``"Mean (unweighted)"``. **Head** is the head-top joint alone (HRNet/TokenPose/paper tables); the toolkit's
own table averages upper neck and head top, returned as ``"Head (toolkit)"``. **Mean@0.1** is what HRNet
and official TokenPose print under that name: ``pckAll[11]`` of ``np.arange(0, 0.51, 0.01)``, the pooled mean
at 0.11 head sizes (:data:`OFFICIAL_LOW_THRESHOLD`); at exactly 0.1 it is ``"Mean@0.1 (exact)"``. See
docs/evaluation.md.

Shapes: ``N`` persons, 16 joints, ``(x, y)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from dspose_graph.io import read_json
from dspose_graph.formats.mpii import shared_mpii_dir

NUM_JOINTS = 16
SC_BIAS = 0.6
JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
               "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri")
EXCLUDED = (6, 7)  # pelvis, thorax: not evaluated by the toolkit
# Table columns: name -> joints averaged for the column (left/right pairs).
GROUPS = {
    "Head": (9,),
    "Shoulder": (12, 13),
    "Elbow": (11, 14),
    "Wrist": (10, 15),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}
TABLE_KEYS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")
GT_KEYS = ("jnt_missing", "pos_gt_src", "headboxes_src")
# The threshold behind official TokenPose/HRNet's "Mean@0.1": index 11 of np.arange(0, 0.5 + 0.01, 0.01).
OFFICIAL_LOW_THRESHOLD = 0.11
EXACT_LOW_THRESHOLD = 0.1


def default_gt_path() -> Path:
    """``<shared data>/mpii/detections_our_format.mat`` (``$DSPOSE_DATA`` or ``../shared/data``)."""
    mpii_dir = shared_mpii_dir()
    if mpii_dir is None:
        raise FileNotFoundError("MPII ground truth not given and no data folder found: pass --gt or set DSPOSE_DATA")
    return mpii_dir / "detections_our_format.mat"


def load_mpii_gt(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The validation ground truth as ``gt (N, 16, 2)``, ``missing (N, 16) bool``, ``head_size (N,)``."""
    path = Path(path) if path is not None else default_gt_path()
    if path.is_dir():
        raise ValueError(f"MPII ground-truth file {path} is a folder; expected detections_our_format.mat")
    if not path.is_file():
        raise FileNotFoundError(f"MPII ground-truth file {path} does not exist")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for unreadable files
        raise ValueError(f"{path}: not a readable .mat file ({e})") from None
    absent = [k for k in GT_KEYS if k not in mat]
    if absent:
        raise ValueError(f"{path}: missing fields {absent}; expected {list(GT_KEYS)} (detections_our_format.mat)")
    pos = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    missing = np.asarray(mat["jnt_missing"]).astype(bool)
    boxes = np.asarray(mat["headboxes_src"], dtype=np.float64)
    n = pos.shape[-1]
    if pos.shape != (NUM_JOINTS, 2, n) or missing.shape != (NUM_JOINTS, n) or boxes.shape != (2, 2, n):
        raise ValueError(
            f"{path}: expected pos_gt_src (16, 2, N), jnt_missing (16, N), headboxes_src (2, 2, N); "
            f"got {pos.shape}, {missing.shape}, {boxes.shape}"
        )
    head_size = SC_BIAS * np.linalg.norm(boxes[1] - boxes[0], axis=0)
    check_gt(pos.transpose(2, 0, 1), missing.T, head_size, path)
    return {"gt": pos.transpose(2, 0, 1), "missing": missing.T, "head_size": head_size, "path": path}


def check_gt(gt: np.ndarray, missing: np.ndarray, head_size: np.ndarray, source: str | Path) -> None:
    """Raise ``ValueError`` naming the person and field when ground truth cannot be scored.

    A zero-size (or NaN) head box would divide every distance of its person by zero: the official
    toolkit then counts that person's joints as wrong without a word. Ground truth with such a box is
    damaged (the official file has none), so it is refused rather than silently scored. Joint positions
    must be finite wherever ``jnt_missing`` says they are annotated.
    """
    bad = np.flatnonzero(~(np.isfinite(head_size) & (head_size > 0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{source}: person {i} (column {i} of 'headboxes_src') has head size {head_size[i]:g}; "
                         f"expected a head box of positive size ({bad.size} person(s) affected)")
    bad_joint = np.argwhere(~np.isfinite(gt).all(axis=2) & ~missing)
    if bad_joint.size:
        i, j = (int(v) for v in bad_joint[0])
        raise ValueError(f"{source}: person {i} joint {JOINT_NAMES[j]!r} in 'pos_gt_src' is not finite "
                         f"but 'jnt_missing' marks it annotated")


def check_threshold(value: float, name: str = "threshold") -> None:
    """Raise ``ValueError`` unless ``value`` is a PCKh threshold in ``(0, 1]`` (a fraction of the head size)."""
    if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
        raise ValueError(f"{name} {value!r} is outside (0, 1]; PCKh thresholds are fractions of the head size "
                         f"(0.5 for PCKh@0.5)")


def check_predictions(preds: np.ndarray, num_persons: int, source: str = "predictions") -> None:
    """Raise ``ValueError`` unless ``preds`` is ``(N, 16, 2)`` finite with N the ground truth's persons."""
    p = np.asarray(preds)
    if p.shape != (num_persons, NUM_JOINTS, 2):
        hint = ""
        if p.ndim == 3 and p.shape[1] != NUM_JOINTS:
            hint = f" ({p.shape[1]} joints per person, MPII has {NUM_JOINTS}: predictions for another skeleton?)"
        elif p.ndim == 3 and p.shape[0] != num_persons:
            hint = f" ({p.shape[0]} persons, the ground truth has {num_persons}: one row per val person, in order)"
        raise ValueError(f"{source}: predictions must be (N, 16, 2) with N = {num_persons} validation persons, "
                         f"got shape {p.shape}{hint}")
    if not np.isfinite(p).all():
        bad = np.argwhere(~np.isfinite(p).all(axis=2))[0]
        raise ValueError(f"{source}: predictions contain NaN/inf (first at person {bad[0]}, joint {JOINT_NAMES[bad[1]]})")


def _pooled(correct: np.ndarray, valid: np.ndarray, joints: list[int]) -> float:
    return float(100.0 * correct[:, joints].sum() / valid[:, joints].sum())


def evaluate_pckh(
    preds: np.ndarray,
    gt_mat_path: str | Path | None = None,
    threshold: float = 0.5,
    low_threshold: float = OFFICIAL_LOW_THRESHOLD,
    source: str = "predictions",
) -> dict[str, Any]:
    """PCKh of ``preds (N, 16, 2)`` (original-image pixels, MATLAB frame as the .mat) against the MPII val GT.

    Returns the table values (``Head`` ... ``Ankle``, ``Mean``, ``Mean@0.1`` at ``low_threshold``, by default
    official's 0.11) plus ``"Mean@0.1 (exact)"`` (at 0.1), ``"Mean (unweighted)"``,
    ``"Head (toolkit)"``, ``"UBody"`` (the toolkit's pooled upper body: wrists, elbows, shoulders),
    ``"per_joint"`` (16 values at ``threshold``, NaN for joints never annotated) and ``"count"``
    (annotated joints per joint). ``source`` names the predictions in error messages.
    """
    check_threshold(threshold, "threshold")
    check_threshold(low_threshold, "low_threshold")
    gt = load_mpii_gt(gt_mat_path)
    p = np.asarray(preds, dtype=np.float64)
    n = gt["gt"].shape[0]
    check_predictions(p, n, source)
    valid = ~gt["missing"]
    dist = np.linalg.norm(p - gt["gt"], axis=2) / gt["head_size"][:, None]
    count = valid.sum(axis=0)
    joints = [j for j in range(NUM_JOINTS) if j not in EXCLUDED]

    def at(thr: float) -> tuple[np.ndarray, np.ndarray]:
        correct = (dist <= thr) & valid
        with np.errstate(invalid="ignore", divide="ignore"):
            per_joint = 100.0 * correct.sum(axis=0) / count
        return correct, per_joint

    correct, per_joint = at(threshold)
    correct_low, _ = at(low_threshold)
    result: dict[str, Any] = {name: float(np.mean(per_joint[list(idx)])) for name, idx in GROUPS.items()}
    result["Mean"] = _pooled(correct, valid, joints)
    result["Mean@0.1"] = _pooled(correct_low, valid, joints)
    result["Mean@0.1 (exact)"] = _pooled(at(EXACT_LOW_THRESHOLD)[0], valid, joints)
    result["Mean (unweighted)"] = float(np.mean(per_joint[joints]))
    result["Head (toolkit)"] = float(np.mean(per_joint[[8, 9]]))
    result["UBody"] = _pooled(correct, valid, [10, 11, 12, 13, 14, 15])
    result["per_joint"] = dict(zip(JOINT_NAMES, (float(v) for v in per_joint)))
    result["count"] = dict(zip(JOINT_NAMES, (int(v) for v in count)))
    result["threshold"] = threshold
    result["low_threshold"] = low_threshold
    result["num_persons"] = n
    return result


def format_pckh_table(result: dict[str, Any]) -> str:
    """The usual one-row table (Head ... Ankle, Mean, Mean@0.1) plus the alternative means, labelled."""
    low = result["low_threshold"]
    official = low == OFFICIAL_LOW_THRESHOLD
    keys = [k if k != "Mean@0.1" or official else f"Mean@{low:g}" for k in TABLE_KEYS]
    header = " | ".join(f"{k:>9}" for k in keys)
    row = " | ".join(f"{result[k]:9.2f}" for k in TABLE_KEYS)
    low_note = (f"Mean@0.1 = pooled at {low:g} head sizes, as HRNet/TokenPose print it (pckAll[11]); "
                if official else "")
    extra = (
        f"Mean = pooled over the 14 evaluated joints (toolkit 'Total'; HRNet/TokenPose/paper).\n"
        f"{low_note}pooled at exactly 0.1: {result['Mean@0.1 (exact)']:.2f}\n"
        f"Mean (unweighted over 14 per-joint values, bearpaw eval_PCKh.py): {result['Mean (unweighted)']:.2f}; "
        f"Head (toolkit: mean of neck and head top): {result['Head (toolkit)']:.2f}; UBody: {result['UBody']:.2f}"
    )
    return f"PCKh@{result['threshold']:g} on {result['num_persons']} MPII val persons\n{header}\n{row}\n{extra}"


def _from_array(arr: np.ndarray, source: str) -> np.ndarray:
    """``(N, 16, 2|3)`` or MATLAB-style ``(16, 2, N)`` -> ``(N, 16, 2)``."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 3 and a.shape[1] == NUM_JOINTS and a.shape[2] in (2, 3):
        return a[:, :, :2]
    if a.ndim == 3 and a.shape[0] == NUM_JOINTS and a.shape[1] == 2:
        return a.transpose(2, 0, 1)
    raise ValueError(f"{source}: predictions must be (N, 16, 2), (N, 16, 3) or (16, 2, N); got shape {a.shape}")


def load_predictions(path: str | Path, key: str = "preds", zero_based: bool = False) -> np.ndarray:
    """Read MPII predictions as ``(N, 16, 2)`` from ``.mat`` (field ``key``), ``.npy`` or ``.json``.

    ``.json`` holds either a nested list, or a dict with field ``key``. Arrays may be ``(N, 16, 2)``,
    ``(N, 16, 3)`` (a score column, dropped) or the MATLAB layout ``(16, 2, N)``. ``zero_based``: the file holds
    0-based pixel coordinates (HRNet's saved preds before its +1); 1 is added to match the 1-based ground truth.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"prediction file {path} is a folder; expected a .mat, .npy or .json file")
    if not path.is_file():
        raise FileNotFoundError(f"prediction file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a readable .mat file ({e})") from None
        if key not in mat:
            fields = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"{path}: no field {key!r}; fields are {fields}")
        arr = mat[key]
    elif suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: not a readable .npy array ({e})") from None
    elif suffix == ".json":
        data = read_json(path, "prediction file")
        if isinstance(data, dict):
            if key not in data:
                raise ValueError(f"{path}: JSON object has no field {key!r}; fields are {sorted(data)}")
            data = data[key]
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: field {key!r} is not a rectangular numeric array") from None
    else:
        raise ValueError(f"{path}: unsupported prediction format {suffix!r}; expected .mat, .npy or .json")
    preds = _from_array(arr, str(path))
    return preds + 1.0 if zero_based else preds
