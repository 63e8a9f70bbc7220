r"""Export-friendly top-t feature adjacency (Eq. 5-7), equal to :func:`topology.feature.feature_adjacency`.

``topology.feature.topk_mask`` ranks each row with a stable sort; ONNX's TopK/Sort cannot express the
stable tie-break and the legacy exporter rejects it. Here the rank of entry j in row i is counted directly,

.. math::
    r_{ij} = \#\{l : s_{il} > s_{ij}\} + \#\{l < j : s_{il} = s_{ij}\}, \qquad
    M_{ij} = [r_{ij} < t],

with the diagonal ranked first, which is the same set as the stable sort (self first, ties to the lower
index) in a few comparisons and a sum: :math:`O(K^3)` per sample, nothing for K = 17, and exportable.

Shapes:
    B: batch, K: keypoints, C: channels. ``x`` ``(B, K, C)`` -> ``(B, K, K)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from topology.feature import cosine_similarity_matrix


def rank_topk_mask(similarity: Tensor, t: int) -> Tensor:
    """Boolean ``(B, K, K)`` top-t mask per row, self always included, ties to the lower index."""
    k = similarity.shape[-1]
    # Index comparisons rather than torch.eye/tril on bools, which onnxruntime lacks kernels for.
    idx = torch.arange(k, device=similarity.device)
    eye = idx.unsqueeze(1) == idx.unsqueeze(0)
    s = similarity.detach().masked_fill(eye, float("inf"))
    a = s.unsqueeze(-1)  # a[b, i, l, 0] = s[b, i, l]
    b = s.unsqueeze(-2)  # b[b, i, 0, j] = s[b, i, j]
    before = idx.unsqueeze(1) < idx.unsqueeze(0)  # before[l, j] = l < j
    beats = (a > b) | ((a == b) & before)  # beats[b, i, l, j]: l ranks before j
    rank = beats.sum(dim=-2)
    return rank < t


def feature_adjacency_dense(x: Tensor, t: int = 4, binary: bool = False) -> Tensor:
    """A_f ``(B, K, K)``: cosine similarity (or 1) on each row's top-t entries, self included, else 0."""
    sim = cosine_similarity_matrix(x)
    mask = rank_topk_mask(sim, t)
    return torch.where(mask, torch.ones_like(sim) if binary else sim, torch.zeros_like(sim))
