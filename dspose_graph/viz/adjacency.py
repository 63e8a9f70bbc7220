"""Figures of the dual-space adjacency: A_p, A_f, A_m as labelled heatmaps and as graphs over a skeleton.

Everything renders through matplotlib's object API on an Agg canvas (no ``pyplot`` state, no display),
so the functions run headless and are safe to call from worker processes. A ``path`` argument may be a
single file or a list of files; the format follows each suffix (``.png``, ``.pdf``, ``.svg``).

Shapes:
    N: samples, K: keypoints, L: graph layers. Matrices are ``(K, K)``; ``A_f``/``A_m`` from the model
    are lists of length L of ``(N, K, K)``; keypoint positions are ``(K, 2)`` (x, y, image-style y down).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import networkx as nx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from dspose_graph.topology.schemas import KeypointSchema

log = logging.getLogger(__name__)

PathLike = str | Path
FIG_DPI = 200
FONT = {"title": 11, "label": 7.5, "suptitle": 13}


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _paths(path: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if path is None:
        return []
    if isinstance(path, (str, Path)):
        return [Path(path)]
    return [Path(p) for p in path]


def save_figure(fig: Figure, path: PathLike | Sequence[PathLike] | None) -> list[Path]:
    """Write ``fig`` to every path (format from the suffix); returns the written paths."""
    written = []
    for p in _paths(path):
        fmt = p.suffix.lstrip(".").lower()
        if fmt not in ("png", "pdf", "svg"):
            raise ValueError(f"figure path {p}: unsupported suffix {p.suffix!r}; expected .png, .pdf or .svg")
        p.parent.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(fig)
        # Write beside the target then rename, so that an interrupted run leaves no truncated figure.
        tmp = p.with_name(f".{p.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=FIG_DPI, bbox_inches="tight")
        tmp.replace(p)
        written.append(p)
        log.info("wrote %s", p)
    return written


def _check_square(name: str, m: np.ndarray, k: int) -> None:
    if m.shape != (k, k):
        raise ValueError(f"{name}: expected a ({k}, {k}) matrix for the schema's {k} keypoints, got {m.shape}")


def draw_matrix(ax, matrix: np.ndarray, names: Sequence[str], title: str, colorbar_label: str = "weight"):
    """One labelled adjacency heatmap on ``ax``: keypoint names on both axes, a colour bar beside it.

    Matrices with negative entries (cosine similarities) get a diverging map centred on 0, others a
    sequential one starting at 0, so that colours are comparable between panels of the same kind.
    """
    m = np.asarray(matrix, dtype=np.float64)
    _check_square(title, m, len(names))
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    if lo < 0:
        bound = max(abs(lo), abs(hi), 1e-12)
        norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
        cmap = "RdBu_r"
    else:
        norm = Normalize(vmin=0.0, vmax=max(hi, 1e-12))
        cmap = "viridis"
    im = ax.imshow(m, cmap=cmap, norm=norm, interpolation="nearest")
    k = len(names)
    ax.set_xticks(range(k), labels=names, rotation=90, fontsize=FONT["label"])
    ax.set_yticks(range(k), labels=names, fontsize=FONT["label"])
    ax.set_xlabel("neighbour j", fontsize=FONT["label"] + 1)
    ax.set_ylabel("keypoint i", fontsize=FONT["label"] + 1)
    ax.set_title(title, fontsize=FONT["title"])
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=FONT["label"])
    cb.set_label(colorbar_label, fontsize=FONT["label"] + 1)
    return im


def _p_texts(p: Any, layers: int, k: int) -> list[str]:
    """Title text per layer for the learned p: scalar, one per layer, or a (K, K) matrix (its mean)."""
    if p is None:
        return [""] * layers
    values = _as_numpy(p).reshape(-1)
    if values.size == 1:
        return [f", p = {values[0]:.3f}"] * layers
    if values.size == layers:
        return [f", p = {v:.3f}" for v in values]
    if values.size == k * k:
        return [f", p: {k}x{k}, mean {values.mean():.3f}"] * layers
    raise ValueError(f"learned p has {values.size} values; expected 1, one per layer ({layers}) or K*K ({k * k})")


def plot_adjacency_heatmaps(
    adjacency: Mapping[str, Any],
    schema: KeypointSchema,
    path: PathLike | Sequence[PathLike] | None = None,
    sample: int = 0,
    title: str | None = None,
) -> Figure:
    """Grid of labelled heatmaps: one row per graph layer with A_p, A_f of one sample, mean A_f, mean A_m.

    Args:
        adjacency: the dict returned by ``model(images, return_adjacency=True)``: ``"A_p"`` ``(K, K)``,
            ``"A_f"`` and ``"A_m"`` lists (one per graph layer) of ``(N, K, K)``, ``"p"`` (scalar or per layer).
        schema: gives the keypoint names on both axes.
        path: file(s) to write; nothing is written when ``None``.
        sample: which of the N samples the per-sample A_f panel shows.
        title: figure title (the number of samples is appended).

    Returns:
        The figure (one row per layer, four panels per row).
    """
    for key in ("A_p", "A_f", "A_m"):
        if key not in adjacency:
            raise ValueError(f"adjacency dict has no {key!r}; expected keys A_p, A_f, A_m, p (got {sorted(adjacency)})")
    names = list(schema.keypoints)
    k = len(names)
    a_p = _as_numpy(adjacency["A_p"])
    _check_square("A_p", a_p, k)
    a_f = [_as_numpy(a) for a in adjacency["A_f"]]
    a_m = [_as_numpy(a) for a in adjacency["A_m"]]
    if not a_f or len(a_f) != len(a_m):
        raise ValueError(f"A_f and A_m must be non-empty lists of equal length (one per graph layer), got {len(a_f)} and {len(a_m)}")
    n = a_f[0].shape[0]
    if not 0 <= sample < n:
        raise ValueError(f"sample {sample} is out of range for {n} samples")
    p_texts = _p_texts(adjacency.get("p"), len(a_f), k)

    rows = len(a_f)
    fig = Figure(figsize=(4 * 5.0, rows * 4.6), layout="constrained")
    axes = fig.subplots(rows, 4, squeeze=False)
    for layer in range(rows):
        tag = f"layer {layer + 1}"
        draw_matrix(axes[layer, 0], a_p, names, f"$A_p$ (physical){p_texts[layer]}")
        draw_matrix(axes[layer, 1], a_f[layer][sample], names, f"$A_f$ sample {sample}, {tag}", "cosine similarity")
        draw_matrix(axes[layer, 2], a_f[layer].mean(axis=0), names, f"$A_f$ mean over {n}, {tag}", "cosine similarity")
        draw_matrix(axes[layer, 3], a_m[layer].mean(axis=0), names, f"$A_m = pA_p + A_f$ mean, {tag}")
    head = title or "Dual-space adjacency"
    fig.suptitle(f"{head} (N = {n} sample{'s' if n != 1 else ''})", fontsize=FONT["suptitle"])
    save_figure(fig, path)
    return fig


def mean_skeleton(keypoints: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Mean keypoint layout ``(K, 2)`` of ``N`` instances ``(N, K, 2|3)``, each normalised first.

    Each instance is centred on its visible keypoints and scaled to unit RMS radius, so that people of
    different size and position average into one shape. ``visible`` defaults to the third column > 0
    (or all keypoints for ``(N, K, 2)``). A keypoint never visible is placed at the centroid.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] not in (2, 3):
        raise ValueError(f"expected keypoints of shape (N, K, 2) or (N, K, 3), got {kp.shape}")
    if visible is None:
        visible = kp[..., 2] > 0 if kp.shape[-1] == 3 else np.ones(kp.shape[:2], dtype=bool)
    visible = np.asarray(visible, dtype=bool) & np.isfinite(kp[..., :2]).all(-1)
    xy = kp[..., :2]
    total = np.zeros((kp.shape[1], 2))
    count = np.zeros(kp.shape[1])
    for inst, vis in zip(xy, visible):
        if vis.sum() < 2:
            continue
        centre = inst[vis].mean(axis=0)
        radius = np.sqrt(((inst[vis] - centre) ** 2).sum(axis=1).mean())
        if radius <= 0:
            continue
        total[vis] += (inst[vis] - centre) / radius
        count[vis] += 1
    if not count.any():
        raise ValueError("no instance has two or more visible keypoints; cannot form a mean skeleton")
    mean = np.zeros_like(total)
    seen = count > 0
    mean[seen] = total[seen] / count[seen, None]
    mean[~seen] = mean[seen].mean(axis=0)
    return mean


def _layout(schema: KeypointSchema, positions: np.ndarray | None) -> dict[int, tuple[float, float]]:
    k = schema.num_keypoints
    if positions is None:
        skeleton = nx.Graph()
        skeleton.add_nodes_from(range(k))
        skeleton.add_edges_from(schema.skeleton)
        pos = nx.kamada_kawai_layout(skeleton)
        return {i: (float(x), float(y)) for i, (x, y) in pos.items()}
    pos_arr = np.asarray(positions, dtype=np.float64)
    if pos_arr.shape != (k, 2):
        raise ValueError(f"keypoint positions: expected ({k}, 2) for the schema's {k} keypoints, got {pos_arr.shape}")
    # Image coordinates grow downwards; flip y so that the head is on top.
    return {i: (float(x), float(-y)) for i, (x, y) in enumerate(pos_arr)}


def adjacency_graph(matrix: np.ndarray, min_weight: float = 0.2) -> nx.Graph:
    """Undirected graph of the off-diagonal entries of ``matrix``: weight ``(|A_ij| + |A_ji|) / 2``.

    Edges below ``min_weight`` times the largest off-diagonal weight are dropped (A_p is dense: every
    pair has at least weight b, which would otherwise hide the group structure).
    """
    m = np.abs(np.asarray(matrix, dtype=np.float64))
    sym = (m + m.T) / 2.0
    np.fill_diagonal(sym, 0.0)
    g = nx.Graph()
    g.add_nodes_from(range(sym.shape[0]))
    top = sym.max()
    if top <= 0:
        return g
    i, j = np.nonzero(np.triu(sym >= min_weight * top, k=1))
    g.add_weighted_edges_from((int(a), int(b), float(sym[a, b])) for a, b in zip(i, j))
    return g


def _short(name: str) -> str:
    return name.replace("left_", "l_").replace("right_", "r_")


def draw_graph(ax, matrix: np.ndarray, schema: KeypointSchema, pos: dict, title: str, min_weight: float = 0.2) -> None:
    """One adjacency drawn as weighted edges over the keypoint layout, with the skeleton for reference."""
    m = np.asarray(matrix, dtype=np.float64)
    _check_square(title, m, schema.num_keypoints)
    g = adjacency_graph(m, min_weight)
    weights = np.array([d["weight"] for _, _, d in g.edges(data=True)])
    norm = Normalize(vmin=0.0, vmax=float(weights.max()) if weights.size else 1.0)
    cmap = matplotlib.colormaps["plasma_r"]
    skeleton = nx.Graph(list(schema.skeleton))
    nx.draw_networkx_edges(skeleton, pos, ax=ax, edge_color="0.75", width=5.0, alpha=0.5)
    if weights.size:
        order = np.argsort(weights)  # strongest edges drawn last, on top
        edges = [list(g.edges())[i] for i in order]
        w = weights[order]
        nx.draw_networkx_edges(
            g, pos, ax=ax, edgelist=edges, width=0.5 + 3.5 * norm(w), edge_color=[cmap(norm(v)) for v in w], alpha=0.9
        )
    if schema.groups is not None:
        colours = [matplotlib.colormaps["tab10"](c % 10) for c in schema.group_labels()]
    else:
        colours = ["tab:blue"] * schema.num_keypoints
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=90, node_color=colours, edgecolors="black", linewidths=0.6)
    # Labels beside the nodes, away from the body's midline: left-side names to the right, right-side to the
    # left, so that the tightly packed face keypoints stay readable.
    left, right = set(schema.left), set(schema.right)
    for i, name in enumerate(schema.keypoints):
        side = 1 if i in left else -1 if i in right else 0
        ax.annotate(_short(name), pos[i], xytext=(6 * side, 5 if side == 0 else 0), textcoords="offset points",
                    ha={1: "left", -1: "right", 0: "center"}[side], va="bottom" if side == 0 else "center",
                    fontsize=FONT["label"])
    ax.set_title(title, fontsize=FONT["title"])
    ax.set_aspect("equal")
    ax.margins(x=0.25, y=0.08)
    ax.set_axis_off()
    cb = ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.02)
    cb.ax.tick_params(labelsize=FONT["label"])
    cb.set_label("edge weight (symmetrised)", fontsize=FONT["label"] + 1)


def plot_learned_graph(
    adjacencies: Mapping[str, Any],
    schema: KeypointSchema,
    positions: np.ndarray | None = None,
    path: PathLike | Sequence[PathLike] | None = None,
    min_weight: float = 0.2,
    title: str | None = None,
) -> Figure:
    """Adjacency matrices drawn as graphs over a mean skeleton, one panel per entry of ``adjacencies``.

    Args:
        adjacencies: panel title -> ``(K, K)`` matrix (e.g. ``{"A_p": ..., "A_m layer 2 (mean)": ...}``).
        schema: keypoint names, the reference skeleton (grey) and the groups (node colours).
        positions: ``(K, 2)`` node positions (a mean skeleton, see :func:`mean_skeleton`); ``None``
            lays out the schema's skeleton graph with networkx (Kamada-Kawai).
        path: file(s) to write; nothing is written when ``None``.
        min_weight: edges below this fraction of the panel's strongest edge are not drawn.
        title: figure title.

    Returns:
        The figure.
    """
    if not adjacencies:
        raise ValueError("plot_learned_graph needs at least one adjacency matrix")
    pos = _layout(schema, positions)
    n = len(adjacencies)
    xy = np.array(list(pos.values()))
    extent = np.ptp(xy, axis=0)
    aspect = float(np.clip(extent[0] / max(extent[1], 1e-9), 0.3, 2.0))
    fig = Figure(figsize=(n * (5.5 * aspect + 1.8), 6.0), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, matrix) in zip(axes, adjacencies.items()):
        draw_graph(ax, _as_numpy(matrix), schema, pos, name, min_weight)
    fig.suptitle(title or "Learned keypoint topology", fontsize=FONT["suptitle"])
    save_figure(fig, path)
    return fig
