r"""PyG convolutions with a dense batched path that shares the PyG layer's own parameters.

Each wrapper holds one PyG layer (``self.conv``). The sparse path calls it on a batch of graphs
(``edge_index``/``edge_weight``); the dense path computes the same function on ``(B, K, K)`` adjacencies
with batched matrix products, reading the same parameters, so a checkpoint works with either backend and
the two agree to float precision (tested). The edges are the non-zero entries of the adjacency; the edge
``j -> i`` carries ``adj[b, i, j]``.

Shapes (this module):
    B: graphs, K: nodes per graph, N = B*K, E: edges, F_in / F_out: channels.
    dense: x ``(B, K, F_in)``, adj ``(B, K, K)`` -> ``(B, K, F_out)``;
    sparse: x ``(N, F_in)``, edge_index ``(2, E)``, edge_weight ``(E,)`` -> ``(N, F_out)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg
from torch import Tensor, nn


def _with_self_loops(adj: Tensor, fill: float = 1.0) -> Tensor:
    # PyG's add_remaining_self_loops: keep existing self loops, add `fill` where a node has none.
    idx = torch.arange(adj.shape[-1], device=adj.device)
    eye = idx.unsqueeze(1) == idx.unsqueeze(0)  # not torch.eye(bool): no onnxruntime kernel
    return torch.where(eye & (adj == 0), torch.full_like(adj, fill), adj)


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    # scores (B, K, K, H) over sources j (dim 2); mask (B, K, K). Rows without edges give zeros, as PyG.
    scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    alpha = torch.softmax(scores, dim=2)
    return torch.nan_to_num(alpha, nan=0.0)


def _per_head(name: str, out_channels: int, heads: int) -> int:
    """Channels per attention head; the heads' outputs are concatenated back to ``out_channels``."""
    if out_channels % heads:
        raise ValueError(f"{name}: out_channels {out_channels} not divisible by heads {heads}")
    return out_channels // heads


class _PyGWrapper(nn.Module):
    """Base: ``forward(x, adj)`` runs the subclass's ``dense``, ``forward(x, edge_index=, edge_weight=)`` the PyG
    layer; ``uses_edge_weight`` says whether the PyG layer takes edge weights."""

    uses_edge_weight = True

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, adj: Tensor | None = None, edge_index: Tensor | None = None,
                edge_weight: Tensor | None = None) -> Tensor:
        if adj is not None:
            return self.dense(x, adj)
        if self.uses_edge_weight:
            return self.conv(x, edge_index, edge_weight)
        return self.conv(x, edge_index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.conv})"


class GCN(_PyGWrapper):
    r"""PyG ``GCNConv`` (Kipf & Welling): :math:`\mathbf{X}' = \hat{D}^{-1/2}\hat{A}\hat{D}^{-1/2}\mathbf{X}
    \mathbf{W} + \mathbf{b}`, :math:`\hat{A}` = A with remaining self loops (weight 1) added. Uses edge weights.

    Shapes: see the module docstring.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(pyg.GCNConv(in_channels, out_channels))

    def dense(self, x: Tensor, adj: Tensor) -> Tensor:
        adj = _with_self_loops(adj)
        dinv = adj.sum(-1).pow(-0.5)
        dinv = dinv.masked_fill(torch.isinf(dinv), 0.0)
        norm = dinv.unsqueeze(-1) * adj * dinv.unsqueeze(-2)
        return norm @ self.conv.lin(x) + self.conv.bias


class GAT(_PyGWrapper):
    r"""PyG ``GATConv``: :math:`\alpha_{ij} = \mathrm{softmax}_j(\mathrm{LeakyReLU}(\mathbf{a}_s^\top
    \mathbf{W}\mathbf{x}_j + \mathbf{a}_d^\top\mathbf{W}\mathbf{x}_i))`, :math:`\mathbf{x}'_i = \sum_j
    \alpha_{ij}\mathbf{W}\mathbf{x}_j + \mathbf{b}`, self loops added.

    **Ignores edge weights**: the adjacency only masks which j attend to i, so A_m's values (p, A_p's a/b,
    A_f's similarities) have no effect beyond their sparsity pattern.

    Shapes: see the module docstring.
    """

    uses_edge_weight = False

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1) -> None:
        super().__init__(pyg.GATConv(in_channels, _per_head("GAT", out_channels, heads), heads=heads))

    def dense(self, x: Tensor, adj: Tensor) -> Tensor:
        c = self.conv
        b, k, _ = x.shape
        h = c.lin(x).view(b, k, c.heads, c.out_channels)
        a_src = (h * c.att_src).sum(-1)
        a_dst = (h * c.att_dst).sum(-1)
        scores = F.leaky_relu(a_dst.unsqueeze(2) + a_src.unsqueeze(1), c.negative_slope)
        alpha = _masked_softmax(scores, _with_self_loops(adj) != 0)
        out = torch.einsum("bijh,bjhf->bihf", alpha, h)
        return out.reshape(b, k, -1) + c.bias


class GATv2(_PyGWrapper):
    r"""PyG ``GATv2Conv``: :math:`\alpha_{ij} = \mathrm{softmax}_j(\mathbf{a}^\top\mathrm{LeakyReLU}(
    \mathbf{W}_l\mathbf{x}_j + \mathbf{W}_r\mathbf{x}_i))`, :math:`\mathbf{x}'_i = \sum_j \alpha_{ij}
    \mathbf{W}_l\mathbf{x}_j + \mathbf{b}`, self loops added.

    **Ignores edge weights** (the adjacency only masks the attention), as :class:`GAT`.

    Shapes: see the module docstring.
    """

    uses_edge_weight = False

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1) -> None:
        super().__init__(pyg.GATv2Conv(in_channels, _per_head("GATv2", out_channels, heads), heads=heads))

    def dense(self, x: Tensor, adj: Tensor) -> Tensor:
        c = self.conv
        b, k, _ = x.shape
        xl = c.lin_l(x).view(b, k, c.heads, c.out_channels)
        xr = c.lin_r(x).view(b, k, c.heads, c.out_channels)
        z = F.leaky_relu(xr.unsqueeze(2) + xl.unsqueeze(1), c.negative_slope)  # (B, i, j, H, F)
        scores = (z * c.att).sum(-1)
        alpha = _masked_softmax(scores, _with_self_loops(adj) != 0)
        out = torch.einsum("bijh,bjhf->bihf", alpha, xl)
        return out.reshape(b, k, -1) + c.bias


class GraphConvW(_PyGWrapper):
    r"""PyG ``GraphConv`` (Morris et al.): :math:`\mathbf{x}'_i = \mathbf{W}_1\mathbf{x}_i + \mathbf{W}_2
    \sum_j A[i, j]\,\mathbf{x}_j`. Uses edge weights.

    Shapes: see the module docstring.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(pyg.GraphConv(in_channels, out_channels))

    def dense(self, x: Tensor, adj: Tensor) -> Tensor:
        return self.conv.lin_rel(adj @ x) + self.conv.lin_root(x)


class SAGE(_PyGWrapper):
    r"""PyG ``SAGEConv`` (mean): :math:`\mathbf{x}'_i = \mathbf{W}_1\mathbf{x}_i + \mathbf{W}_2\,
    \mathrm{mean}_{j: A[i,j] \neq 0}\mathbf{x}_j`.

    **Ignores edge weights**: only the sparsity pattern of the adjacency is used.

    Shapes: see the module docstring.
    """

    uses_edge_weight = False

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(pyg.SAGEConv(in_channels, out_channels))

    def dense(self, x: Tensor, adj: Tensor) -> Tensor:
        mask = (adj != 0).to(x.dtype)
        mean = (mask @ x) / mask.sum(-1, keepdim=True).clamp_min(1.0)
        return self.conv.lin_l(mean) + self.conv.lin_r(x)


class GraphTransformer(_PyGWrapper):
    r"""PyG ``TransformerConv`` (Shi et al.): :math:`\alpha_{ij} = \mathrm{softmax}_j((\mathbf{W}_q
    \mathbf{x}_i)^\top(\mathbf{W}_k\mathbf{x}_j)/\sqrt{d})`, :math:`\mathbf{x}'_i = \mathbf{W}_s\mathbf{x}_i
    + \sum_j \alpha_{ij}\mathbf{W}_v\mathbf{x}_j`; no self loops are added (A_m has them).

    **Ignores edge weights** (the adjacency only masks the attention).

    Shapes: see the module docstring.
    """

    uses_edge_weight = False

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1) -> None:
        super().__init__(pyg.TransformerConv(in_channels, _per_head("TransformerConv", out_channels, heads), heads=heads))

    def dense(self, x: Tensor, adj: Tensor) -> Tensor:
        c = self.conv
        b, k, _ = x.shape
        q = c.lin_query(x).view(b, k, c.heads, c.out_channels)
        key = c.lin_key(x).view(b, k, c.heads, c.out_channels)
        v = c.lin_value(x).view(b, k, c.heads, c.out_channels)
        scores = torch.einsum("bihf,bjhf->bijh", q, key) / c.out_channels ** 0.5
        alpha = _masked_softmax(scores, adj != 0)
        out = torch.einsum("bijh,bjhf->bihf", alpha, v).reshape(b, k, -1)
        return out + c.lin_skip(x)
