"""The MPII Human Pose annotation file: the one reader, shared by the dataset and the topology builder.

The file is the widely used ``mpii_annotations.json`` (or ``.json.gz``): a list with one dict per annotated
person, ``img_paths``, ``objpos`` ``[x, y]``, ``scale_provided`` (person height / 200 px), ``joint_self``
16 x ``[x, y, vis]``, ``isValidation`` (0 or 1) and optionally ``annolist_index``. Coordinates are MATLAB's
1-based pixel indices, returned as stored. A joint stored as ``[0, 0, 0]`` is not annotated; ``vis == 0``
with coordinates is annotated but occluded.

Splits (:data:`SPLITS`, by ``isValidation``): ``train`` (22,246 persons), ``val`` (2,958), ``trainval``
(both). Every record is checked; a bad one raises ``ValueError`` naming the file, the record and the field.

Shapes: ``N`` persons of the split; ``joints (N, 16, 3)``, ``objpos (N, 2)``, ``scale (N,)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from dspose_graph.io import read_json, shared_data_dir

SPLITS = {"train": (0,), "val": (1,), "trainval": (0, 1)}
RENAMED_SPLITS = {"all": "trainval"}
REQUIRED_FIELDS = ("img_paths", "objpos", "scale_provided", "joint_self", "isValidation")
NUM_JOINTS = 16
_SHAPES = {"joint_self": (NUM_JOINTS, 3), "objpos": (2,), "scale_provided": ()}
_LAYOUT = {"joint_self": " (16 joints x [x, y, vis])", "objpos": " ([x, y])", "scale_provided": " (one number)"}
# Where the annotation file lies in an MPII folder, in the order looked for: the release layout
# (``ROOT/annotations/``) first, then the file at the top (as in the shared data folder's ``mpii/``).
MPII_ANNOTATION_FILES = ("annotations/mpii_annotations.json.gz", "annotations/mpii_annotations.json",
                         "mpii_annotations.json.gz", "mpii_annotations.json")


def find_mpii_annotations(root: str | Path) -> Path | None:
    """The MPII annotation file of the MPII folder ``root`` (see ``MPII_ANNOTATION_FILES``), or None."""
    root = Path(root)
    return next((root / name for name in MPII_ANNOTATION_FILES if (root / name).is_file()), None)


def shared_mpii_dir() -> Path | None:
    """The MPII folder of the shared data folder (``<data>/mpii``: annotations and PCKh ground truth), or None."""
    root = shared_data_dir()
    return root / "mpii" if root is not None else None


def check_split(split: str) -> tuple[int, ...]:
    """The ``isValidation`` values of ``split``; ``ValueError`` naming the valid splits (and a renamed one's new name)."""
    if split in RENAMED_SPLITS:
        raise ValueError(f"MPII split {split!r} is now called {RENAMED_SPLITS[split]!r}")
    if split not in SPLITS:
        raise ValueError(f"MPII split must be one of {sorted(SPLITS)}, got {split!r}")
    return SPLITS[split]


@dataclasses.dataclass(frozen=True)
class MPIIPersons:
    """The persons of one split of an MPII annotation file, checked, in array form (1-based pixels as stored).

    ``records`` are the persons' indices in the file's list; ``image_ids`` their ``annolist_index``
    (-1 where the file has none).
    """

    source: Path
    split: str
    records: np.ndarray
    image_paths: list[str]
    image_ids: np.ndarray
    joints: np.ndarray
    objpos: np.ndarray
    scale: np.ndarray

    @property
    def annotated(self) -> np.ndarray:
        """``(N, 16)`` bool: the joint has coordinates (is not ``[0, 0, 0]``)."""
        return ~np.all(self.joints == 0, axis=-1)

    def __len__(self) -> int:
        return int(self.records.shape[0])


_CACHE: dict[str, Any] = {}


def read_mpii_annotations(path: str | Path) -> list[Any]:
    """The raw list of person dicts of an MPII annotation file (treat as read-only).

    Parsing takes seconds; the last file read is kept (keyed by path, size and mtime) because a run
    builds its train and val datasets, and the topology builder its statistics, from the same file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MPII annotation file {path} does not exist")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _CACHE.get("key") != key:
        data = read_json(path, "MPII annotation file")
        if not isinstance(data, list):
            raise ValueError(f"MPII annotation file {path} must hold a list of person dicts, got {type(data).__name__}")
        _CACHE.clear()
        _CACHE.update(key=key, data=data)
    return _CACHE["data"]


def read_mpii(path: str | Path, split: str = "train") -> MPIIPersons:
    """The checked persons of ``split`` in the MPII annotation file ``path`` (see the module docstring)."""
    wanted = check_split(split)
    path = Path(path)
    people = read_mpii_annotations(path)
    chosen = []
    for i, person in enumerate(people):
        where = f"MPII annotation file {path}: record {i}"
        if not isinstance(person, dict):
            raise ValueError(f"{where}: expected a dict, got {type(person).__name__}")
        missing = [f for f in REQUIRED_FIELDS if f not in person]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        if _number(person["isValidation"]) not in (0, 1):
            raise ValueError(f"{where}: field 'isValidation' must be 0 or 1, got {person['isValidation']!r}")
        if int(person["isValidation"]) in wanted:
            chosen.append(i)
    arrays = {field: _array(path, people, chosen, field) for field in _SHAPES}
    for field, values in arrays.items():
        bad = ~np.isfinite(values.reshape(len(chosen), -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"MPII annotation file {path}: record {chosen[int(np.argmax(bad))]}: field {field!r} "
                             f"has NaN/inf values; expected finite numbers")
    scale = arrays["scale_provided"]
    if (scale <= 0).any():
        j = int(np.argmax(scale <= 0))
        raise ValueError(f"MPII annotation file {path}: record {chosen[j]}: field 'scale_provided' must be positive, "
                         f"got {scale[j]}")
    return MPIIPersons(
        source=path, split=split, records=np.asarray(chosen, dtype=np.int64),
        image_paths=[str(people[i]["img_paths"]) for i in chosen],
        image_ids=np.asarray([int(people[i].get("annolist_index", -1)) for i in chosen], dtype=np.int64),
        joints=arrays["joint_self"], objpos=arrays["objpos"], scale=scale,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _array(path: Path, people: list[Any], chosen: list[int], field: str) -> np.ndarray:
    """``field`` of the chosen records stacked into ``(N, *shape)``; names the first malformed record."""
    shape = _SHAPES[field]
    if not chosen:
        return np.zeros((0, *shape))
    try:
        out = np.asarray([people[i][field] for i in chosen], dtype=np.float64)
        if out.shape[1:] == shape:
            return out
    except (ValueError, TypeError):
        pass
    for i in chosen:
        try:
            got: Any = np.asarray(people[i][field], dtype=np.float64).shape
        except (ValueError, TypeError):
            got = "not numeric"
        if got != shape:
            raise ValueError(f"MPII annotation file {path}: record {i}: field {field!r} has shape {got}, "
                             f"expected {shape}{_LAYOUT[field]}")
    raise ValueError(f"MPII annotation file {path}: field {field!r} is malformed")
