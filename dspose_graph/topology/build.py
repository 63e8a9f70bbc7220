"""Build a physical topology for a dataset: from raw annotations when present, else from the shipped MI.

``build_topology("mpii")`` regenerates the paper's six MPII clusters from the MPII training persons;
``build_topology("coco")`` maps them to COCO's five groups (``dspose_graph.topology.mapping``) and attaches the MI
measured on COCO-format annotations; ``build_topology("<file>.json")`` clusters any COCO-format
keypoint file on its own statistics (the direct route).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dspose_graph.formats.mpii import find_mpii_annotations, shared_mpii_dir
from dspose_graph.topology.annotations import load_coco_statistics, load_mpii_statistics
from dspose_graph.topology.files import PhysicalTopology, load_topology, shipped_path
from dspose_graph.io import provenance, shared_data_dir
from dspose_graph.topology.mapping import map_clusters
from dspose_graph.topology.physical import DEFAULT_ESTIMATOR, DEFAULT_VARIABLE, cluster_mi, default_bins, physical_mi
from dspose_graph.topology.schemas import COCO17, MPII16

log = logging.getLogger(__name__)

# The COCO-format annotations the shipped COCO MI was measured on, under the shared data folder.
COCO_RAW_FILE = Path("coco_mini", "annotations", "person_keypoints_train.json")


def find_annotations(dataset: str, annotations: str | Path | None = None) -> Path | None:
    """The raw annotation file: ``annotations`` if given (must exist), else the shared data folder's, else None."""
    if annotations is not None:
        path = Path(annotations)
        if not path.is_file():
            raise FileNotFoundError(f"annotation file {path} does not exist")
        return path
    if dataset == "mpii":
        mpii_dir = shared_mpii_dir()
        return find_mpii_annotations(mpii_dir) if mpii_dir is not None else None
    root = shared_data_dir()
    if root is None or dataset != "coco":
        return None
    path = root / COCO_RAW_FILE
    return path if path.is_file() else None


def _parse_clusters(clusters: int | str, num_keypoints: int | None = None) -> int | str:
    if isinstance(clusters, str) and clusters not in ("auto", "eigengap"):
        try:
            clusters = int(clusters)
        except ValueError:
            raise ValueError(f"clusters must be a positive integer, 'auto' or 'eigengap', got {clusters!r}") from None
    if not isinstance(clusters, str) and (isinstance(clusters, bool) or int(clusters) < 1):
        raise ValueError(f"clusters must be a positive integer, 'auto' or 'eigengap', got {clusters!r}")
    # Checked before any annotation is read, so a bad count fails at once.
    if not isinstance(clusters, str) and num_keypoints is not None and int(clusters) > num_keypoints:
        raise ValueError(f"number of clusters must be an integer in [1, K={num_keypoints}], got {clusters}")
    return clusters


def _estimate(stats, variable: str, estimator: str, params: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    if estimator == "binned" and params.get("bins") is None:
        params = {**params, "bins": default_bins(int(stats.annotated.sum(0).min()))}
    mi = physical_mi(stats, variable=variable, estimator=estimator, **params)
    return mi, {"variable": variable, "estimator": estimator, **params, "persons": stats.num_persons}


def build_mpii(annotations: str | Path | None = None, clusters: int | str = "auto", seed: int = 0,
               variable: str = DEFAULT_VARIABLE, estimator: str = DEFAULT_ESTIMATOR, **params) -> PhysicalTopology:
    """MPII clusters from the training persons of the raw file, or from the shipped MI without it."""
    clusters = _parse_clusters(clusters, MPII16.num_keypoints)
    raw = find_annotations("mpii", annotations)
    if raw is None:
        shipped = load_topology("mpii")
        log.info("MPII annotations not found; clustering the shipped MI (%s)", shipped_path("mpii"))
        labels = cluster_mi(shipped.mi, clusters, seed=seed, default=len(MPII16.groups))
        record = provenance(shipped_path("mpii"), from_shipped_mi=True, clusters=clusters, seed=seed,
                            shipped_parameters=shipped.provenance.get("parameters", {}))
        return PhysicalTopology(MPII16, labels, shipped.mi, record)
    stats = load_mpii_statistics(raw, split="train")
    mi, record = _estimate(stats, variable, estimator, params)
    labels = cluster_mi(mi, clusters, seed=seed, default=len(MPII16.groups))
    record.update(split="train", clusters=clusters, num_clusters=int(labels.max()) + 1, seed=seed)
    return PhysicalTopology(MPII16, labels, mi, provenance(raw, **record))


def build_coco(annotations: str | Path | None = None, clusters: int | str = "auto", seed: int = 0,
               variable: str = DEFAULT_VARIABLE, estimator: str = DEFAULT_ESTIMATOR, **params) -> PhysicalTopology:
    """COCO groups mapped from the MPII clusters; MI from COCO-format annotations (or the shipped MI).

    ``clusters`` applies to the MPII clustering that is mapped. The direct clustering of the COCO MI into
    as many groups is recorded in the provenance (``direct_groups``) for comparison.
    """
    mpii = build_mpii(None, clusters, seed)
    labels = map_clusters(MPII16, mpii.labels, COCO17)
    raw = find_annotations("coco", annotations)
    record: dict[str, Any] = {"mapping": "mpii->coco (keep the rest, group symmetric joints, group the head)",
                              "mpii_source_sha256": mpii.provenance.get("source_sha256"), "seed": seed}
    if raw is None:
        shipped = load_topology("coco")
        log.info("COCO annotations not found; using the shipped COCO MI (%s)", shipped_path("coco"))
        mi, source = shipped.mi, shipped_path("coco")
        record.update(from_shipped_mi=True, shipped_parameters=shipped.provenance.get("parameters", {}))
    else:
        stats = load_coco_statistics(raw)
        if stats.schema.keypoints != COCO17.keypoints:
            raise ValueError(f"{raw}: keypoints {list(stats.schema.keypoints)} are not COCO-17's; use the file path as dataset")
        mi, est = _estimate(stats, variable, estimator, params)
        source = raw
        record.update(est)
    if mi is not None:
        direct = cluster_mi(mi, int(labels.max()) + 1, seed=seed)
        record["direct_groups"] = [[COCO17.keypoints[i] for i in np.flatnonzero(direct == c)] for c in np.unique(direct)]
    return PhysicalTopology(COCO17, labels, mi, provenance(source, **record))


def build_from_file(path: str | Path, clusters: int | str = "auto", seed: int = 0,
                    variable: str = DEFAULT_VARIABLE, estimator: str = DEFAULT_ESTIMATOR, **params) -> PhysicalTopology:
    """Direct route: any COCO-format keypoint json clustered on its own statistics."""
    clusters = _parse_clusters(clusters)
    stats = load_coco_statistics(path)
    mi, record = _estimate(stats, variable, estimator, params)
    default = len(stats.schema.groups) if stats.schema.groups else None
    labels = cluster_mi(mi, clusters, seed=seed, default=default)
    record.update(clusters=clusters, num_clusters=int(labels.max()) + 1, seed=seed)
    return PhysicalTopology(stats.schema, labels, mi, provenance(path, **record))


def build_topology(dataset: str, annotations: str | Path | None = None, clusters: int | str = "auto", seed: int = 0,
                   **options) -> PhysicalTopology:
    """Physical topology of ``dataset`` (``"mpii"``, ``"coco"`` or a COCO-format ``.json`` path).

    ``clusters``: an integer, ``"eigengap"``, or ``"auto"`` (the paper's count for MPII/COCO, else the
    eigengap). ``options`` go to the MI estimate (``variable``, ``estimator``, ``bins``, ...).
    """
    if dataset == "mpii":
        return build_mpii(annotations, clusters, seed, **options)
    if dataset == "coco":
        return build_coco(annotations, clusters, seed, **options)
    if str(dataset).endswith(".json"):
        if annotations is not None:
            raise ValueError("give either a COCO-format json as dataset or --annotations, not both")
        return build_from_file(dataset, clusters, seed, **options)
    raise ValueError(f"unknown dataset {dataset!r}: expected 'mpii', 'coco' or a COCO-format .json path")


def compare_with_shipped(topo: PhysicalTopology) -> dict[str, Any] | None:
    """How a freshly built topology differs from the shipped one of the same schema (None if none shipped)."""
    if topo.schema.name not in ("mpii", "coco"):
        return None
    shipped = load_topology(topo.schema.name)
    same_source = topo.provenance.get("source_sha256") == shipped.provenance.get("source_sha256")
    mi_diff = None
    if topo.mi is not None and shipped.mi is not None:
        mi_diff = float(np.abs(topo.mi - shipped.mi).max())
    return {"same_partition": shipped.same_partition(topo), "max_abs_mi_difference": mi_diff,
            "same_source": same_source, "shipped_file": str(shipped_path(topo.schema.name)),
            "shipped_source_sha256": shipped.provenance.get("source_sha256")}


def format_topology_summary(topo: PhysicalTopology, name: str) -> str:
    """What ``dspose topology`` prints: the clusters by joint name, where the MI came from, a direct clustering's
    own groups, and (for a topology built from raw data) how it compares with the shipped one."""
    params = topo.provenance.get("parameters", {})
    origin = "shipped MI" if params.get("from_shipped_mi") else topo.provenance.get("source", "?")
    lines = [f"{name}: {topo.num_clusters} clusters from {origin}"]
    lines += [f"  {i}: {', '.join(group)}" for i, group in enumerate(topo.named_groups)]
    if "direct_groups" in params:
        lines.append(f"  (direct clustering of this MI into {len(params['direct_groups'])}: "
                     + " | ".join(", ".join(g) for g in params["direct_groups"]) + ")")
    cmp = None if params.get("from_shipped_mi") else compare_with_shipped(topo)
    if cmp is not None:
        verdict = "equals" if cmp["same_partition"] else "DIFFERS FROM"
        diff = "" if cmp["max_abs_mi_difference"] is None else \
            f", max |MI - shipped MI| = {cmp['max_abs_mi_difference']:.2e}"
        lines.append(f"  partition {verdict} the shipped {cmp['shipped_file']}{diff}")
    return "\n".join(lines)
