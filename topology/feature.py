r"""Feature-space adjacency: per-sample top-t cosine kNN edges between keypoint tokens (Eq. 5-7).

.. math::
    S_{ij} = \frac{h_i \cdot h_j}{\lVert h_i \rVert \lVert h_j \rVert}, \qquad
    A_f[i, j] = S_{ij} \text{ if } j \in \operatorname{top}_t(S_{i,:}) \text{ else } 0,

where the top-t set of row i always contains i itself (self included, then the t - 1 most similar
others). Ties are broken towards the lower keypoint index, so the edges are deterministic.

S and the top-t choice are always computed in float32, autocast or not: the top-t set is a discrete choice
that bf16/fp16 rounding of S flips on near-ties, and an AMP-trained model must learn on the same graphs
that fp32 evaluation and inference build (issue 16).

Shapes:
    B: batch size, K: keypoints, C: feature channels, E: number of edges.
    ``x``: ``(B, K, C)``; ``A_f``: ``(B, K, K)``; ``edge_index``: ``(2, E)`` over ``B*K`` nodes;
    ``edge_weight``: ``(E,)``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_similarity_matrix(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Batched cosine similarity ``(B, K, C) -> (B, K, K)`` (Eq. 5), in float32 whatever the autocast."""
    if x.dim() != 3:
        raise ValueError(f"expected keypoint features of shape (B, K, C), got {tuple(x.shape)}")
    # Autocast would run the matmul in bf16/fp16 even on float32 inputs, so it is switched off here. The
    # meta device (shape-only runs: FLOP counting) has no autocast to switch off.
    no_autocast = nullcontext() if x.device.type == "meta" else torch.autocast(x.device.type, enabled=False)
    with no_autocast:
        xn = F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1, eps=eps)
        return xn @ xn.transpose(1, 2)


def topk_mask(similarity: Tensor, t: int) -> Tensor:
    """Boolean ``(B, K, K)`` mask of each row's top-t entries, self always included, ties to lower index."""
    k = similarity.shape[-1]
    if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= k:
        raise ValueError(f"top-t must be an integer in [1, K={k}], got {t!r}")
    # The rank of entry j in row i is counted directly, r_ij = #{l: s_il > s_ij} + #{l < j: s_il = s_ij}, with
    # the diagonal ranked first; r_ij < t is the same set as a stable sort's first t (self first, ties to the
    # lower index). O(K^3) per sample, nothing for K = 17, and ONNX-exportable, which a stable sort is not.
    # Index comparisons rather than torch.eye/tril on bools, which onnxruntime lacks kernels for.
    idx = torch.arange(k, device=similarity.device)
    eye = idx.unsqueeze(1) == idx.unsqueeze(0)
    s = similarity.detach().masked_fill(eye, float("inf"))
    a, b = s.unsqueeze(-1), s.unsqueeze(-2)  # a[.., i, l, 0] = s_il, b[.., i, 0, j] = s_ij
    before = idx.unsqueeze(1) < idx.unsqueeze(0)  # before[l, j] = l < j
    rank = ((a > b) | ((a == b) & before)).sum(dim=-2)
    return rank < t


def feature_adjacency(x: Tensor, t: int = 4, binary: bool = False, return_edges: bool = False):
    """A_f from keypoint features (Eq. 5-7).

    Args:
        x: keypoint features ``(B, K, C)``.
        t: edges kept per row, self included, ``1 <= t <= K``.
        binary: keep 1 on the kept edges instead of the similarity value.
        return_edges: also return ``(edge_index, edge_weight)`` of exactly the kept edges, in PyG's
            source-to-target convention over a batch of ``B`` graphs of ``K`` nodes.

    Returns:
        ``A_f`` of shape ``(B, K, K)``, or ``(A_f, edge_index, edge_weight)``.
    """
    sim = cosine_similarity_matrix(x)
    mask = topk_mask(sim, t)
    a_f = torch.where(mask, torch.ones_like(sim) if binary else sim, torch.zeros_like(sim))
    if not return_edges:
        return a_f
    edge_index, edge_weight = dense_to_edges(a_f, mask)
    return a_f, edge_index, edge_weight


def dense_to_edges(adj: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batched dense adjacency ``(B, K, K)`` (or ``(K, K)``) -> PyG ``edge_index`` / ``edge_weight``.

    ``adj[b, i, j]`` is the weight with which node i aggregates node j, i.e. the message j -> i, so the
    edge is ``(source=b*K+j, target=b*K+i)``. Edges are ordered by graph, then target, then source.
    ``mask`` selects the edges (default: the non-zero entries), so that zero-weight kept edges survive.
    """
    if adj.dim() == 2:
        adj = adj.unsqueeze(0)
        mask = None if mask is None else mask.unsqueeze(0)
    if mask is None:
        mask = adj != 0
    b, i, j = mask.nonzero(as_tuple=True)
    k = adj.shape[-1]
    edge_index = torch.stack([b * k + j, b * k + i])
    return edge_index, adj[b, i, j]


def edges_to_dense(edge_index: Tensor, edge_weight: Tensor | None, num_graphs: int, num_nodes: int) -> Tensor:
    """Inverse of :func:`dense_to_edges`: ``(B, K, K)`` with ``adj[b, i, j]`` the weight of edge j -> i."""
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1])
    adj = edge_weight.new_zeros(num_graphs, num_nodes, num_nodes)
    src, dst = edge_index
    if edge_index.numel() and (src // num_nodes != dst // num_nodes).any():
        raise ValueError("edge_index has edges between different graphs of the batch")
    adj.index_put_((dst // num_nodes, dst % num_nodes, src % num_nodes), edge_weight, accumulate=True)
    return adj
