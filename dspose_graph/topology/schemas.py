"""Keypoint schemas: the one source of truth for names, flip pairs, OKS sigmas, skeleton and groups.

A schema is plain data. COCO-17, MPII-16 and LSP-14 are built in; any COCO-format ``categories`` entry
(CrowdPose, AIC, a user's own skeleton) becomes a schema through :meth:`KeypointSchema.from_coco_category`.
Indices are 0-based everywhere; COCO's 1-based ``skeleton`` is converted on reading.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dspose_graph.io import read_json

log = logging.getLogger(__name__)

_SIDE_PREFIXES = (("left_", "right_"), ("l_", "r_"), ("left", "right"))


def infer_flip_pairs(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Pairs ``(i, j)`` with ``i < j`` whose names differ only by a left/right prefix."""
    index = {n: i for i, n in enumerate(names)}
    pairs = set()
    for i, name in enumerate(names):
        for left, right in _SIDE_PREFIXES:
            if name.startswith(left):
                j = index.get(right + name[len(left):])
                if j is not None:
                    pairs.add((min(i, j), max(i, j)))
                break
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class KeypointSchema:
    """A dataset's keypoint definition.

    Attributes:
        name: short identifier (``"coco"``, ``"mpii"``, or the category name).
        keypoints: keypoint names in annotation order (K of them).
        skeleton: 0-based limb edges ``(i, j)``.
        flip_pairs: 0-based index pairs ``(i, j)``, ``i < j``, swapped by a horizontal flip.
        sigmas: per-keypoint OKS sigmas, or ``None`` where the dataset defines none.
        groups: the paper's keypoint groups (partition of ``range(K)``), or ``None``.
    """

    name: str
    keypoints: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None = None
    groups: tuple[tuple[int, ...], ...] | None = None
    upper_body: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        if len(set(self.keypoints)) != k:
            raise ValueError(f"schema {self.name!r}: keypoint names are not unique: {self.keypoints}")
        for what, edges in (("skeleton", self.skeleton), ("flip_pairs", self.flip_pairs)):
            for e in edges:
                if len(e) != 2 or not all(0 <= v < k for v in e):
                    raise ValueError(f"schema {self.name!r}: {what} edge {e} is not a pair of indices in [0, {k})")
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"schema {self.name!r}: {len(self.sigmas)} sigmas for {k} keypoints")
        if self.groups is not None:
            flat = sorted(i for g in self.groups for i in g)
            if flat != list(range(k)):
                raise ValueError(f"schema {self.name!r}: groups {self.groups} are not a partition of range({k})")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"schema {self.name!r} has no keypoint {name!r}; it has {list(self.keypoints)}") from None

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation ``perm`` so that ``flipped[..., perm[k], :]`` is keypoint k after a horizontal flip."""
        perm = np.arange(self.num_keypoints)
        for i, j in self.flip_pairs:
            perm[i], perm[j] = j, i
        return perm

    def _side(self, want_left: bool) -> tuple[int, ...]:
        # Pairs are stored as (lower index, higher index): MPII lists the right joint first, so the side
        # comes from the name where it says so, else from the position in the pair.
        def is_left(i: int) -> bool:
            return self.keypoints[i].lower().startswith(tuple(left for left, _ in _SIDE_PREFIXES))

        out = []
        for i, j in self.flip_pairs:
            left, right = (j, i) if is_left(j) and not is_left(i) else (i, j)
            out.append(left if want_left else right)
        return tuple(sorted(out))

    @property
    def left(self) -> tuple[int, ...]:
        """Indices of the left member of every flip pair (by name prefix)."""
        return self._side(True)

    @property
    def right(self) -> tuple[int, ...]:
        """Indices of the right member of every flip pair (by name prefix)."""
        return self._side(False)

    def group_labels(self) -> np.ndarray:
        """``(K,)`` integer label of each keypoint's group; raises if the schema has no groups."""
        if self.groups is None:
            raise ValueError(f"schema {self.name!r} defines no keypoint groups")
        labels = np.empty(self.num_keypoints, dtype=np.int64)
        for g, members in enumerate(self.groups):
            labels[list(members)] = g
        return labels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KeypointSchema":
        return cls(
            name=d["name"],
            keypoints=tuple(d["keypoints"]),
            skeleton=tuple(tuple(e) for e in d["skeleton"]),
            flip_pairs=tuple(tuple(e) for e in d["flip_pairs"]),
            sigmas=None if d.get("sigmas") is None else tuple(float(s) for s in d["sigmas"]),
            groups=None if d.get("groups") is None else tuple(tuple(g) for g in d["groups"]),
            upper_body=tuple(d.get("upper_body", ())),
        )

    @classmethod
    def from_coco_category(cls, category: dict[str, Any], source: str = "<category>") -> "KeypointSchema":
        """Schema from a COCO-format ``categories`` entry (``keypoints`` names, 1-based ``skeleton``).

        Known skeletons (COCO-17 and LSP-14 names) get their sigmas and groups; others get flip pairs inferred
        from left/right name prefixes and no sigmas.
        """
        names = category.get("keypoints")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{source}: category {category.get('name')!r} field 'keypoints' must be a non-empty list of names")
        for known in (COCO17, LSP14):
            if tuple(names) == known.keypoints:
                return known
        return cls(
            name=str(category.get("name", "custom")),
            keypoints=tuple(names),
            skeleton=_valid_skeleton(category, len(names), source),
            flip_pairs=infer_flip_pairs(names),
        )


def _valid_skeleton(category: dict[str, Any], k: int, source: str) -> tuple[tuple[int, int], ...]:
    """The category's 1-based ``skeleton`` as 0-based edges, invalid edges dropped with a warning.

    The skeleton is drawing metadata, so a bad edge must not refuse the file: real CrowdPose files carry
    COCO's 17-keypoint skeleton (``[16, 14], [17, 15], ...``) next to their 14 keypoints.
    """
    raw = category.get("skeleton") or []
    if not isinstance(raw, list):
        log.warning("%s: category %r field 'skeleton' is not a list of edges (%r); ignored",
                    source, category.get("name"), raw)
        return ()
    edges, dropped = [], []
    for e in raw:
        ok = isinstance(e, (list, tuple)) and len(e) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= k for v in e)
        if ok:
            edges.append((e[0] - 1, e[1] - 1))
        else:
            dropped.append(e)
    if dropped:
        log.warning("%s: category %r field 'skeleton': dropped %d of %d edges that are not two 1-based indices "
                    "in [1, %d] (K = %d keypoints): %s", source, category.get("name"), len(dropped), len(raw), k, k,
                    ", ".join(map(str, dropped)))
    return tuple(edges)


def _idx(names: Sequence[str], *wanted: str) -> tuple[int, ...]:
    return tuple(names.index(w) for w in wanted)


_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO's official 1-based skeleton, converted to 0-based.
_COCO_SKELETON_1 = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

COCO17 = KeypointSchema(
    name="coco",
    keypoints=_COCO_NAMES,
    skeleton=tuple((a - 1, b - 1) for a, b in _COCO_SKELETON_1),
    flip_pairs=infer_flip_pairs(_COCO_NAMES),
    # COCO keypoint evaluation sigmas (cocoapi, pycocotools/cocoeval.py).
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    # The paper's five COCO groups: head, shoulders, arms, hips, legs.
    groups=(
        _idx(_COCO_NAMES, "nose", "left_eye", "right_eye", "left_ear", "right_ear"),
        _idx(_COCO_NAMES, "left_shoulder", "right_shoulder"),
        _idx(_COCO_NAMES, "left_elbow", "right_elbow", "left_wrist", "right_wrist"),
        _idx(_COCO_NAMES, "left_hip", "right_hip"),
        _idx(_COCO_NAMES, "left_knee", "right_knee", "left_ankle", "right_ankle"),
    ),
    upper_body=tuple(range(11)),
)

_MPII_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)

MPII16 = KeypointSchema(
    name="mpii",
    keypoints=_MPII_NAMES,
    skeleton=(
        (0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (10, 11), (11, 12), (12, 7), (13, 7), (13, 14), (14, 15),
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    sigmas=None,
    # The paper's six MPII clusters (Fig. 3 of the paper), found again by dspose_graph.topology.physical.
    groups=(
        _idx(_MPII_NAMES, "head_top", "upper_neck", "thorax"),
        _idx(_MPII_NAMES, "l_wrist", "l_elbow", "l_shoulder"),
        _idx(_MPII_NAMES, "r_wrist", "r_elbow", "r_shoulder"),
        _idx(_MPII_NAMES, "l_knee", "l_ankle"),
        _idx(_MPII_NAMES, "r_knee", "r_ankle"),
        _idx(_MPII_NAMES, "l_hip", "r_hip", "pelvis"),
    ),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)

# LSP / LSP Extended (Johnson & Everingham). Joint names follow MPII, which extended LSP's 14 joints by
# pelvis and thorax: LSP's "neck" is MPII's upper_neck, so the MPII -> LSP mapping is by name.
_LSP_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow", "r_shoulder",
    "l_shoulder", "l_elbow", "l_wrist", "upper_neck", "head_top",
)

LSP14 = KeypointSchema(
    name="lsp",
    keypoints=_LSP_NAMES,
    skeleton=(
        (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 12), (9, 12), (9, 10), (10, 11),
        (12, 13), (2, 8), (3, 9),
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
    # LSP defines no OKS sigmas: COCO's for the twelve limb joints, CrowdPose's 0.079 for head top and neck.
    sigmas=(0.089, 0.087, 0.107, 0.107, 0.087, 0.089, 0.062, 0.072, 0.079, 0.079, 0.072, 0.062, 0.079, 0.079),
    # MPII's six clusters carried over by dspose_graph.topology.mapping (tested): head top, neck and shoulders (MPII's
    # thorax cluster, its stand-ins), elbows + wrists, hips, knees + ankles.
    groups=(
        _idx(_LSP_NAMES, "head_top", "upper_neck", "r_shoulder", "l_shoulder"),
        _idx(_LSP_NAMES, "r_elbow", "r_wrist", "l_elbow", "l_wrist"),
        _idx(_LSP_NAMES, "r_hip", "l_hip"),
        _idx(_LSP_NAMES, "r_knee", "r_ankle", "l_knee", "l_ankle"),
    ),
    upper_body=(6, 7, 8, 9, 10, 11, 12, 13),
)

SCHEMAS = {"coco": COCO17, "mpii": MPII16, "lsp": LSP14}


def get_schema(name_or_path: str | Path) -> KeypointSchema:
    """A built-in schema by name (``coco``, ``mpii``, ``lsp``) or the first keypoint category of a COCO-format JSON."""
    key = str(name_or_path)
    if key in SCHEMAS:
        return SCHEMAS[key]
    path = Path(key)
    if not path.suffix == ".json":
        raise ValueError(f"unknown schema {key!r}: expected one of {sorted(SCHEMAS)} or a COCO-format .json path")
    data = read_json(path, "schema file")
    cats = [c for c in data.get("categories", []) if isinstance(c, dict) and c.get("keypoints")]
    if not cats:
        raise ValueError(f"{path}: no entry of 'categories' has a 'keypoints' list")
    return KeypointSchema.from_coco_category(cats[0], source=str(path))
