"""Figures of a physical topology: the MI matrix ordered by cluster, and the skeleton coloured by cluster.

Rendered with matplotlib's object API on an Agg canvas (headless); the format follows the path's suffix.

Shapes:
    K: keypoints. MI: ``(K, K)``; keypoint positions: ``(K, 2)`` (x right, y up).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import networkx as nx
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from dspose_graph.graph.keypoint_graph import KeypointGraph
from dspose_graph.topology.files import PhysicalTopology, save_topology
from dspose_graph.viz.adjacency import save_figure
from dspose_graph.topology.mapping import canonical_name
from dspose_graph.topology.schemas import KeypointSchema

log = logging.getLogger(__name__)

# A front-facing standing person (x right, y up, height ~1.75): the person's right is on the viewer's left.
CANONICAL_POSE = {
    "head_top": (0.0, 1.75), "upper_neck": (0.0, 1.5), "thorax": (0.0, 1.32), "pelvis": (0.0, 0.98),
    "nose": (0.0, 1.57), "l_eye": (0.07, 1.66), "r_eye": (-0.07, 1.66), "l_ear": (0.15, 1.6), "r_ear": (-0.15, 1.6),
    "l_shoulder": (0.24, 1.42), "r_shoulder": (-0.24, 1.42), "l_elbow": (0.3, 1.1), "r_elbow": (-0.3, 1.1),
    "l_wrist": (0.36, 0.8), "r_wrist": (-0.36, 0.8), "l_hip": (0.15, 0.88), "r_hip": (-0.15, 0.88),
    "l_knee": (0.15, 0.48), "r_knee": (-0.15, 0.48), "l_ankle": (0.15, 0.05), "r_ankle": (-0.15, 0.05),
}


def canonical_layout(schema: KeypointSchema) -> np.ndarray:
    """``(K, 2)`` positions: the canonical pose where every name is known, else a spring layout of the skeleton."""
    names = [canonical_name(n) for n in schema.keypoints]
    if all(n in CANONICAL_POSE for n in names):
        return np.array([CANONICAL_POSE[n] for n in names], dtype=np.float64)
    g = nx.Graph()
    g.add_nodes_from(range(schema.num_keypoints))
    g.add_edges_from(schema.skeleton)
    pos = nx.spring_layout(g, seed=0)
    return np.array([pos[i] for i in range(schema.num_keypoints)], dtype=np.float64)


def _cluster_colours(n: int) -> list:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_mi_matrix(topo: PhysicalTopology, path: str | Path) -> Figure:
    """Heatmap of the normalised MI with keypoints ordered by cluster and cluster blocks outlined."""
    if topo.mi is None:
        raise ValueError(f"topology {topo.schema.name!r} carries no MI matrix to plot")
    order = [i for g in topo.groups for i in g]
    names = [topo.schema.keypoints[i] for i in order]
    m = np.array(topo.mi)[np.ix_(order, order)]
    k = len(order)
    fig = Figure(figsize=(0.42 * k + 2.2, 0.42 * k + 1.2))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    start = 0
    colours = _cluster_colours(len(topo.groups))
    for c, g in enumerate(topo.groups):
        ax.add_patch(_block(start, len(g), colours[c]))
        start += len(g)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="normalised mutual information")
    estimator = topo.provenance.get("parameters", {}).get("estimator", "")
    ax.set_title(f"{topo.schema.name}: MI ordered by cluster ({topo.num_clusters} clusters) {estimator}".strip(), fontsize=10)
    save_figure(fig, path)
    return fig


def _block(start: int, size: int, colour) -> Rectangle:
    return Rectangle((start - 0.5, start - 0.5), size, size, fill=False, edgecolor=colour, linewidth=2.0)


def write_topology_figures(topo: PhysicalTopology, out: Path, formats: str, source: str = "") -> list[Path]:
    """``mi_matrix`` (when ``topo`` stores the MI) and ``topology_skeleton`` figures in each of ``formats``."""
    from dspose_graph.viz.learned import output_paths

    written = []
    if topo.mi is None:
        log.warning("topology %s stores no mutual-information matrix; mi_matrix not drawn", source or topo.schema.name)
    for path in output_paths(out, "mi_matrix", formats) if topo.mi is not None else []:
        plot_mi_matrix(topo, path)
        written.append(path)
    for path in output_paths(out, "topology_skeleton", formats):
        plot_topology_skeleton(topo, path)
        written.append(path)
    return written


def write_topology_files(topo: PhysicalTopology, out: Path, name: str, a: float = 0.9) -> list[Path]:
    """Everything ``dspose topology`` writes under ``out``: ``NAME_topology.json`` (the clusters),
    ``NAME_graph.json`` (the :class:`~dspose_graph.graph.keypoint_graph.KeypointGraph` with
    ``A_p = a*A_s + (1-a)*ones``, Eq. 4), ``NAME_mi.png`` (when ``topo`` stores the MI) and ``NAME_skeleton.png``.
    Returns the paths written, in that order."""
    graph = KeypointGraph.from_topology(topo, a=a)
    written = [save_topology(topo, out / f"{name}_topology.json"), graph.save(out / f"{name}_graph.json")]
    if topo.mi is not None:
        plot_mi_matrix(topo, out / f"{name}_mi.png")
        written.append(out / f"{name}_mi.png")
    plot_topology_skeleton(topo, out / f"{name}_skeleton.png")
    written.append(out / f"{name}_skeleton.png")
    return written


def plot_topology_skeleton(topo: PhysicalTopology, path: str | Path, positions: np.ndarray | None = None) -> Figure:
    """The skeleton with joints coloured by cluster and a legend naming each cluster's joints."""
    schema = topo.schema
    pos = canonical_layout(schema) if positions is None else np.asarray(positions, dtype=np.float64)
    if pos.shape != (schema.num_keypoints, 2):
        raise ValueError(f"positions: expected ({schema.num_keypoints}, 2) for schema {schema.name!r}, got {pos.shape}")
    fig = Figure(figsize=(5.5, 6.5))
    ax = fig.add_subplot()
    for a, b in schema.skeleton:
        ax.plot(pos[[a, b], 0], pos[[a, b], 1], color="0.6", linewidth=2, zorder=1)
    colours = _cluster_colours(len(topo.groups))
    handles = []
    for c, g in enumerate(topo.groups):
        idx = list(g)
        ax.scatter(pos[idx, 0], pos[idx, 1], s=140, color=colours[c], edgecolor="black", zorder=2)
        label = ", ".join(canonical_name(schema.keypoints[i]) for i in idx)
        handles.append(Line2D([], [], marker="o", linestyle="", markersize=9, color=colours[c], markeredgecolor="black", label=label))
    for i, name in enumerate(schema.keypoints):
        ax.annotate(canonical_name(name), pos[i], textcoords="offset points", xytext=(7, 3), fontsize=7)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{schema.name}: {topo.num_clusters} physical-space clusters", fontsize=11)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), fontsize=7, frameon=False)
    save_figure(fig, path)
    return fig
