r"""The table of graph convolutions and the full DSPose graph layer (Eq. (9)).

Shapes (this module):
    B: graphs (samples), K: keypoints, F_in / F_out: channels.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from dspose_graph.graph.dual_conv import DualSpaceConv
from dspose_graph.graph.pyg_convs import GAT, GATv2, GCN, SAGE, GraphConvW, GraphTransformer
from dspose_graph.graph.feature import dense_to_edges

# name -> constructor(in_channels, out_channels). The one place where convolutions are swapped.
CONVS: dict[str, Callable[[int, int], nn.Module]] = {
    "dspose": DualSpaceConv,
    "gcn": GCN,
    "gat": GAT,
    "gatv2": GATv2,
    "graphconv": GraphConvW,
    "sage": SAGE,
    "transformer": GraphTransformer,
}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "identity": nn.Identity,
}
NORMALIZATIONS = ("none", "row", "symmetric")
BACKENDS = ("dense", "sparse")


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def create_conv(name: str, in_channels: int, out_channels: int) -> nn.Module:
    """Build a graph convolution from :data:`CONVS` by name."""
    return _lookup(CONVS, name, "graph conv")(in_channels, out_channels)


def normalize_adjacency(adj: Tensor, mode: str = "none", eps: float = 1e-6) -> Tensor:
    r"""``none``: A; ``row``: :math:`D^{-1}A`; ``symmetric``: :math:`D^{-1/2}AD^{-1/2}`, D = row sums.

    Row sums are clamped at ``eps`` so rows that cancel out (negative similarities) stay finite.
    """
    if mode == "none":
        return adj
    deg = adj.sum(-1).clamp_min(eps)
    if mode == "row":
        return adj / deg.unsqueeze(-1)
    if mode == "symmetric":
        d = deg.rsqrt()
        return d.unsqueeze(-1) * adj * d.unsqueeze(-2)
    raise ValueError(f"unknown adjacency normalisation {mode!r}; valid: {', '.join(NORMALIZATIONS)}")


class GraphLayer(nn.Module):
    r"""One DSPose graph layer, Eq. (9): :math:`\mathbf{H}^{(l+1)} = \sigma(\mathrm{conv}(\mathrm{LN}(
    \mathbf{H}^{(l)}), \mathbf{A}_m))`, with ``conv`` the paper's :math:`\mathbf{A}_m\,\cdot\,\mathbf{W}`
    by default or any entry of :data:`CONVS`.

    Args:
        in_channels: F_in.
        out_channels: F_out.
        conv: name in :data:`CONVS`.
        activation: name in :data:`ACTIVATIONS` (``"identity"`` for a linear layer).
        residual: add the input (only when ``F_in == F_out``).
        backend: ``"dense"`` (batched matmuls) or ``"sparse"`` (PyG message passing over the B graphs).

    Shapes:
        - **input:** h ``(B, K, F_in)``, adj ``(B, K, K)``
        - **output:** ``(B, K, F_out)``
    """

    def __init__(self, in_channels: int, out_channels: int, conv: str = "dspose", activation: str = "relu",
                 residual: bool = False, backend: str = "dense") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown graph backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if residual and in_channels != out_channels:
            raise ValueError(f"residual graph layer needs in == out channels, got {in_channels} -> {out_channels}")
        self.norm = nn.LayerNorm(in_channels)
        self.conv = create_conv(conv, in_channels, out_channels)
        self.act = _lookup(ACTIVATIONS, activation, "activation")()
        self.residual = residual
        self.backend = backend
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.conv.reset_parameters()

    def forward(self, h: Tensor, adj: Tensor) -> Tensor:
        x = self.norm(h)
        if self.backend == "dense":
            out = self.conv(x, adj)
        else:
            b, k, c = x.shape
            edge_index, edge_weight = dense_to_edges(adj)
            out = self.conv(x.reshape(b * k, c), edge_index=edge_index, edge_weight=edge_weight).view(b, k, -1)
        out = self.act(out)
        return out + h if self.residual else out


def check_top_t(t: int, num_keypoints: int) -> int:
    """Validate the feature-space neighbourhood size t (Eq. 6-7): an integer in ``[1, K]``."""
    if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= num_keypoints:
        raise ValueError(f"top-t must be an integer in [1, K={num_keypoints}], got {t!r}")
    return t


__all__ = ["CONVS", "ACTIVATIONS", "NORMALIZATIONS", "BACKENDS", "create_conv", "normalize_adjacency",
           "GraphLayer", "check_top_t"]
