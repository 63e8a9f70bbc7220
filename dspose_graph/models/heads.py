r"""Heads turning keypoint tokens into heatmaps: TokenPose's MLP and DSPose's dual-space graph head.

Both map ``(B, K, D_in)`` keypoint tokens through N layers of widths ``D_in -> hidden -> ... -> h*w`` to one
flattened heatmap per keypoint. The MLP applies ``LN -> Linear`` per layer (TokenPose, no activation); the
graph head applies Eq. (9) per layer, mixing keypoints through ``A_m`` (Eq. (8)).

Heads are built by name from :data:`HEADS` (``DSPoseConfig.head``), a table of constructors
``(config, schema, in_dim, out_dim) -> head``. ``forward(tokens, return_adjacency=True)`` returns
``(heatmaps, adjacency)``; the adjacency is ``None`` for the MLP head, which has no graph.

Shapes (this module):
    B: batch, K: keypoints, D_in: token width, HW: heatmap pixels (h*w).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from dspose_graph.graph.layers import GraphLayer, check_top_t, normalize_adjacency
from dspose_graph.topology.adjacency import labels_from_groups, physical_adjacency
from dspose_graph.graph.feature import feature_adjacency
from dspose_graph.topology.schemas import KeypointSchema

if TYPE_CHECKING:
    from dspose_graph.models.dspose import DSPoseConfig


GRAPH_MODES = ("dual", "feature", "physical")


def layer_widths(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> list[int]:
    """``[D_in, hidden, ..., hidden, HW]`` for N layers (N >= 1)."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"the head needs num_layers >= 1, got {num_layers!r}")
    return [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]


def physical_adjacency_for(schema: KeypointSchema, topology: Any = None, a: float = 0.9) -> np.ndarray:
    """A_p ``(K, K)`` (Eq. 4) for ``schema`` from a topology spec (see :class:`DSPoseConfig`), K checked."""
    k = schema.num_keypoints
    if topology is None:
        return physical_adjacency(schema.group_labels(), a)
    if isinstance(topology, (str, Path)):
        from dspose_graph.topology.files import load_topology  # lazy: the topology files are only needed here

        topo = load_topology(topology)
        if topo.schema.num_keypoints != k:
            raise ValueError(
                f"topology {topology!r} has {topo.schema.num_keypoints} keypoints but the model's schema "
                f"{schema.name!r} has K={k}"
            )
        return physical_adjacency(topo.labels, a)
    rows = [list(r) for r in topology]
    square = all(len(r) == len(rows) for r in rows)
    if square and len(rows) == k:
        return np.asarray(rows, dtype=np.float32)
    if square and not _is_partition(rows, k):
        raise ValueError(f"topology adjacency has shape ({len(rows)}, {len(rows)}); expected ({k}, {k}) "
                         f"for schema {schema.name!r}")
    return physical_adjacency(labels_from_groups(rows, k), a)


def _is_partition(rows: list, k: int) -> bool:
    try:
        return sorted(int(i) for r in rows for i in r) == list(range(k))
    except (TypeError, ValueError):
        return False


class MLPHead(nn.Module):
    """TokenPose's head: per layer ``LN -> Linear`` (e.g. LN(192)->Linear(192,384)->LN(384)->Linear(384,3072)).

    Shapes:
        input ``(B, K, D_in)``, output ``(B, K, HW)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        widths = layer_widths(in_dim, hidden_dim, out_dim, num_layers)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.LayerNorm(a), nn.Linear(a, b)]
        self.mlp = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            else:
                m.reset_parameters()

    def forward(self, tokens: Tensor, return_adjacency: bool = False):
        out = self.mlp(tokens)
        # No graph, so no adjacency: None rather than empty matrices a caller could mistake for a graph.
        return (out, None) if return_adjacency else out


class GraphHead(nn.Module):
    r"""DSPose's dual-space graph head: N layers of Eq. (9) on :math:`\mathbf{A}_m = p\mathbf{A}_p +
    \mathbf{A}_f` (Eq. (8)), ``mode="dual"``, on :math:`\mathbf{A}_f` alone, ``mode="feature"``, or on the fixed
    :math:`\mathbf{A}_p` alone, ``mode="physical"`` (the physical-space ablation: the body's graph, no feature graph).

    Args:
        in_dim, hidden_dim, out_dim, num_layers: widths ``D_in -> hidden^(N-1) -> HW``.
        a_p: ``(K, K)`` physical adjacency (Eq. 4), a fixed buffer; ignored in ``"feature"`` mode.
        mode: ``"dual"``, ``"feature"`` or ``"physical"``.
        conv: graph convolution name (see :data:`dspose_graph.graph.layers.CONVS`).
        t: feature-space neighbours per row, self included (Eq. 6-7), ``1 <= t <= K``.
        p_mode: ``"scalar"`` (one learnable p, the paper) or ``"matrix"`` (a learnable ``(K, K)`` weighting).
        p_init: initial value of p.
        af_binary: A_f keeps 1 on kept edges instead of the cosine similarity.
        af_source: ``"layer"``: A_f from each layer's input H(l); ``"tokens"``: once from the keypoint tokens.
        normalize: ``"none"``, ``"row"`` or ``"symmetric"`` normalisation of A_m.
        activation: sigma of Eq. (9) on every layer but the last (which regresses heatmaps, so stays linear).
        residual: residual connection where the widths match.
        backend: ``"dense"`` or ``"sparse"``.

    Shapes:
        input ``(B, K, D_in)``, output ``(B, K, HW)``; with ``return_adjacency`` also a dict with ``"A_p"``
        ``(K, K)``, ``"A_f"``/``"A_m"`` lists (one per layer) of ``(B, K, K)`` and ``"p"``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, a_p: Tensor,
                 mode: str = "dual", conv: str = "dspose", t: int = 4, p_mode: str = "scalar",
                 p_init: float = 1.0, af_binary: bool = False, af_source: str = "layer",
                 normalize: str = "none", activation: str = "relu", residual: bool = False,
                 backend: str = "dense") -> None:
        super().__init__()
        k = a_p.shape[0]
        if mode not in GRAPH_MODES:
            raise ValueError(f"unknown graph head mode {mode!r}; valid: {', '.join(GRAPH_MODES)}")
        if p_mode not in ("scalar", "matrix"):
            raise ValueError(f"unknown p_mode {p_mode!r}; valid: scalar, matrix")
        if af_source not in ("layer", "tokens"):
            raise ValueError(f"unknown af_source {af_source!r}; valid: layer, tokens")
        normalize_adjacency(a_p, normalize)  # validates the name early
        self.mode, self.t, self.af_binary, self.af_source, self.normalize = mode, check_top_t(t, k), af_binary, \
            af_source, normalize
        self.p_init = float(p_init)
        self.register_buffer("a_p", a_p.detach().clone().float())
        # Only the dual head mixes two graphs, so only it has p (an unused parameter would break DDP).
        self.p = nn.Parameter(torch.empty(() if p_mode == "scalar" else (k, k))) if mode == "dual" else None
        widths = layer_widths(in_dim, hidden_dim, out_dim, num_layers)
        self.layers = nn.ModuleList(
            GraphLayer(a, b, conv=conv, activation=activation if i < num_layers - 1 else "identity",
                       residual=residual and a == b, backend=backend)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.p is not None:
            nn.init.constant_(self.p, self.p_init)
        for layer in self.layers:
            layer.reset_parameters()

    def set_backend(self, backend: str) -> None:
        """Switch all layers between the ``"dense"`` and ``"sparse"`` paths (same parameters)."""
        if backend not in ("dense", "sparse"):
            raise ValueError(f"unknown graph backend {backend!r}; valid: dense, sparse")
        for layer in self.layers:
            layer.backend = backend

    def mixed_adjacency(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(A_f, A_m)`` for features ``h`` ``(B, K, C)`` (Eq. 5-8, then the chosen normalisation); in
        ``"physical"`` mode A_f is zero and A_m is A_p for every sample."""
        if self.mode == "physical":
            b, k = h.shape[0], self.a_p.shape[0]
            a_p = self.a_p.to(h.dtype).expand(b, k, k)
            return torch.zeros_like(a_p), normalize_adjacency(a_p, self.normalize)
        a_f = feature_adjacency(h, self.t, binary=self.af_binary)
        a_m = a_f + self.p * self.a_p if self.mode == "dual" else a_f
        return a_f, normalize_adjacency(a_m, self.normalize)

    def forward(self, tokens: Tensor, return_adjacency: bool = False):
        h = tokens
        a_fs, a_ms = [], []
        if self.af_source == "tokens":
            a_f, a_m = self.mixed_adjacency(tokens)
        for layer in self.layers:
            if self.af_source == "layer":
                a_f, a_m = self.mixed_adjacency(h)
            a_fs.append(a_f)
            a_ms.append(a_m)
            h = layer(h, a_m)
        if not return_adjacency:
            return h
        a_p = self.a_p if self.mode != "feature" else torch.zeros_like(self.a_p)
        p = self.p if self.mode == "dual" else torch.zeros((), device=h.device)
        return h, {"A_p": a_p, "A_f": a_fs, "A_m": a_ms, "p": p}


def _mlp_head(config: DSPoseConfig, schema: KeypointSchema, in_dim: int, out_dim: int) -> MLPHead:
    return MLPHead(in_dim, config.hidden_dim, out_dim, config.head_layers)


def _graph_head(mode: str) -> Callable[..., GraphHead]:
    def build(config: DSPoseConfig, schema: KeypointSchema, in_dim: int, out_dim: int) -> GraphHead:
        k = schema.num_keypoints
        # The feature-only ablation has no physical graph: A_p is a zero buffer it never reads.
        a_p = torch.from_numpy(physical_adjacency_for(schema, config.topology, config.a)) if mode != "feature" \
            else torch.zeros(k, k)
        return GraphHead(in_dim, config.hidden_dim, out_dim, config.head_layers, a_p, mode=mode, conv=config.conv,
                         t=config.t, p_mode=config.p_mode, p_init=config.p_init, af_binary=config.af_binary,
                         af_source=config.af_source, normalize=config.normalize, activation=config.activation,
                         residual=config.residual, backend=config.backend)

    return build


# DSPoseConfig.head -> constructor (config, schema, in_dim, out_dim) -> head module.
HEADS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp_head,  # TokenPose
    "feature": _graph_head("feature"),  # A_f only (Table 5)
    "physical": _graph_head("physical"),  # A_p only (the physical-space ablation; not a row of the paper)
    "dual": _graph_head("dual"),  # A_m = p A_p + A_f (the paper)
}
