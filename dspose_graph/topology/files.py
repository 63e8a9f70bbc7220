"""Topology files: a physical topology (schema, clusters, normalised MI) as JSON with provenance.

The package ships ``dspose_graph/topology/data/mpii.json`` and ``dspose_graph/topology/data/coco.json`` (our derived numbers,
never raw annotations), so that models build and ``dspose topology`` clusters without any dataset.

File format (``format_version`` 1)::

    {"format": "dspose-topology", "format_version": 1,
     "schema": KeypointSchema.to_dict(),
     "labels": [K ints], "groups": [[names], ...],     # groups is informative; labels are the truth
     "mi": [[K floats] x K] | null,                    # normalised to [0, 1], diagonal 1
     "provenance": {source, source_sha256, parameters: {variable, estimator, bins, clusters, ...},
                    version, created, ...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dspose_graph.topology.adjacency import physical_adjacency
from dspose_graph.io import atomic_write_json, read_json
from dspose_graph.topology.schemas import KeypointSchema

FORMAT = "dspose-topology"
FORMAT_VERSION = 1
SHIPPED = ("mpii", "coco")


@dataclass
class PhysicalTopology:
    """A schema's keypoint clusters and the normalised MI they came from (``mi`` may be ``None``).

    Shapes:
        K: keypoints. ``labels``: ``(K,)`` int; ``mi``: ``(K, K)`` float in [0, 1].
    """

    schema: KeypointSchema
    labels: np.ndarray
    mi: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = self.schema.num_keypoints
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (k,):
            raise ValueError(f"topology {self.schema.name!r}: labels have shape {self.labels.shape}; expected ({k},)")
        if self.mi is not None:
            self.mi = np.asarray(self.mi, dtype=np.float64)
            if self.mi.shape != (k, k):
                raise ValueError(f"topology {self.schema.name!r}: mi has shape {self.mi.shape}; expected ({k}, {k})")
            if not np.isfinite(self.mi).all() or self.mi.min() < 0 or self.mi.max() > 1:
                raise ValueError(f"topology {self.schema.name!r}: mi must be finite and normalised to [0, 1]")

    @property
    def num_clusters(self) -> int:
        return int(len(np.unique(self.labels)))

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Clusters as tuples of keypoint indices, ordered by their lowest index."""
        order = sorted(np.unique(self.labels), key=lambda c: int(np.flatnonzero(self.labels == c)[0]))
        return tuple(tuple(int(i) for i in np.flatnonzero(self.labels == c)) for c in order)

    @property
    def named_groups(self) -> list[list[str]]:
        return [[self.schema.keypoints[i] for i in g] for g in self.groups]

    def same_partition(self, other: "PhysicalTopology | np.ndarray") -> bool:
        """Whether two labelings split the keypoints identically (label numbers may differ)."""
        labels = other.labels if isinstance(other, PhysicalTopology) else np.asarray(other)
        eq = self.labels[:, None] == self.labels[None, :]
        return labels.shape == self.labels.shape and bool((eq == (labels[:, None] == labels[None, :])).all())

    def adjacency(self, a: float = 0.9) -> np.ndarray:
        """A_p = a A_s + (1 - a) ones, ``(K, K)`` float32 (Eq. 4)."""
        return physical_adjacency(self.labels, a)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema": self.schema.to_dict(),
            "labels": self.labels.tolist(),
            "groups": self.named_groups,
            "mi": None if self.mi is None else np.round(self.mi, 6).tolist(),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> "PhysicalTopology":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{source}: not a topology file (field 'format' must be {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: field 'format_version' is {d.get('format_version')!r}; expected {FORMAT_VERSION}")
        for name in ("schema", "labels"):
            if name not in d:
                raise ValueError(f"{source}: missing field {name!r}")
        try:
            schema = KeypointSchema.from_dict(d["schema"])
            return cls(schema, np.asarray(d["labels"]), None if d.get("mi") is None else np.asarray(d["mi"], dtype=np.float64),
                       dict(d.get("provenance", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{source}: invalid topology ({e})") from None


def shipped_path(name: str) -> Path:
    """Path of a topology file shipped with the package (``mpii`` or ``coco``)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped topology {name!r}; shipped: {list(SHIPPED)}")
    return Path(str(resources.files("dspose_graph.topology") / "data" / f"{name}.json"))


def load_topology(name_or_path: str | Path) -> PhysicalTopology:
    """A shipped topology by name (``"mpii"``, ``"coco"``) or a topology JSON file."""
    key = str(name_or_path)
    path = shipped_path(key) if key in SHIPPED else Path(key)
    return PhysicalTopology.from_dict(read_json(path, "topology file"), source=str(path))


def save_topology(topo: PhysicalTopology, path: str | Path) -> Path:
    """Write ``topo`` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    atomic_write_json(path, topo.to_dict())
    return path
