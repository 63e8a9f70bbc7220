"""Graph convolutions: dense == sparse (values and gradients) for every conv, top-t rows, adjacency options.

Node features are person keypoints of the generated COCO-format set (normalised x, y, visibility, lifted to C
channels by a fixed random map); A_p is the shipped COCO topology, A_f their top-t cosine graph.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from dspose_graph.graph.keypoint_graph import KeypointGraph
from dspose_graph.graph.layers import CONVS, GraphLayer, create_conv, normalize_adjacency
from dspose_graph.models.heads import GraphHead
from dspose_graph.graph.feature import cosine_similarity_matrix, feature_adjacency, topk_mask
from dspose_graph.topology.files import load_topology

K, C_IN, C_OUT = 17, 24, 12


@pytest.fixture(scope="module")
def keypoint_features(synthetic_coco) -> torch.Tensor:
    """``(6, 17, C_IN)`` features of the first 6 generated persons with at least 12 labelled keypoints."""
    anns = json.loads((synthetic_coco / "annotations" / "person_keypoints_train.json").read_text())["annotations"]
    people = [np.asarray(a["keypoints"], dtype=np.float64).reshape(K, 3) for a in anns if a["num_keypoints"] >= 12][:6]
    assert len(people) == 6
    feats = []
    for kp in people:
        xy = (kp[:, :2] - kp[:, :2].mean(0)) / kp[:, :2].std()
        feats.append(np.concatenate([xy, kp[:, 2:] / 2.0], axis=1))
    lift = torch.randn(3, C_IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.tanh(torch.from_numpy(np.stack(feats)) @ lift)


@pytest.fixture(scope="module")
def a_p() -> torch.Tensor:
    return torch.from_numpy(load_topology("coco").adjacency(0.9)).double()


def _perturbed_layer(name: str, backend: str = "dense") -> GraphLayer:
    torch.manual_seed(3)
    layer = GraphLayer(C_IN, C_OUT, conv=name, activation="gelu", backend=backend).double()
    with torch.no_grad():  # move away from zero-init attention/bias so every parameter matters
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


def _run(layer: GraphLayer, x: torch.Tensor, adj: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = layer(x, adj)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                [x, *layer.parameters()])
    return out, grads


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("graph", ["feature", "dual"])
def test_dense_equals_sparse(name, graph, keypoint_features, a_p):
    a_f = feature_adjacency(keypoint_features, t=4)
    adj = a_f if graph == "feature" else a_f + 0.8 * a_p
    layer = _perturbed_layer(name)
    out_d, grads_d = _run(layer, keypoint_features, adj)
    layer.backend = "sparse"
    out_s, grads_s = _run(layer, keypoint_features, adj)
    assert torch.isfinite(out_d).all() and out_d.abs().max() > 1e-3
    torch.testing.assert_close(out_d, out_s, atol=1e-5, rtol=1e-5)
    for gd, gs in zip(grads_d, grads_s):
        torch.testing.assert_close(gd, gs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CONVS))
def test_sparse_on_a_batch_of_keypoint_graphs(name, keypoint_features, a_p):
    x = keypoint_features.float()
    adj = feature_adjacency(x, t=4) + 0.5 * a_p.float()
    conv = create_conv(name, C_IN, C_OUT)
    batch = Batch.from_data_list([KeypointGraph.from_dense(adj[b], x=x[b]) for b in range(x.shape[0])])
    sparse = conv(batch.x, edge_index=batch.edge_index, edge_weight=batch.edge_weight)
    torch.testing.assert_close(sparse.view(x.shape[0], K, C_OUT), conv(x, adj), atol=1e-5, rtol=1e-5)


def test_attention_convs_ignore_edge_weights_and_weighted_ones_do_not(keypoint_features, a_p):
    adj = feature_adjacency(keypoint_features, t=4) + 0.5 * a_p
    rescaled = adj * 3.0 + (adj != 0) * 0.25
    for name in CONVS:
        conv = create_conv(name, C_IN, C_OUT).double()
        same = torch.allclose(conv(keypoint_features, adj), conv(keypoint_features, rescaled), atol=1e-10)
        assert same == (not getattr(conv, "uses_edge_weight", True)), name


def _stable_sort_topk(sim: torch.Tensor, t: int) -> torch.Tensor:
    """Reference: self first, then a stable descending sort (ties to the lower index), first t kept."""
    scores = sim.masked_fill(torch.eye(sim.shape[-1], dtype=torch.bool), float("inf"))
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :t]
    return torch.zeros(sim.shape, dtype=torch.bool).scatter_(-1, order, True)


def test_rank_topk_equals_stable_sort_including_ties():
    g = torch.Generator().manual_seed(0)
    for sim in (torch.randn(4, K, K, generator=g), torch.randint(0, 3, (4, K, K), generator=g).float()):
        for t in (1, 2, 4, K):
            mask = topk_mask(sim, t)
            assert torch.equal(mask, _stable_sort_topk(sim, t))
            assert (mask.sum(-1) == t).all() and mask.diagonal(dim1=1, dim2=2).all()


def test_feature_adjacency_rows_keep_t_entries_self_first(keypoint_features):
    a_f = feature_adjacency(keypoint_features, t=4)
    torch.testing.assert_close(a_f, cosine_similarity_matrix(keypoint_features) * _stable_sort_topk(
        cosine_similarity_matrix(keypoint_features), 4))
    assert ((a_f != 0).sum(-1) == 4).all()
    torch.testing.assert_close(a_f.diagonal(dim1=1, dim2=2), torch.ones(a_f.shape[0], K, dtype=a_f.dtype))
    assert set(feature_adjacency(keypoint_features, t=4, binary=True).unique().tolist()) == {0.0, 1.0}


def test_normalisations(a_p):
    row = normalize_adjacency(a_p, "row")
    torch.testing.assert_close(row.sum(-1), torch.ones(K, dtype=a_p.dtype))
    d = a_p.sum(-1).rsqrt()
    torch.testing.assert_close(normalize_adjacency(a_p, "symmetric"), d[:, None] * a_p * d[None, :])
    assert normalize_adjacency(a_p, "none") is a_p
    with pytest.raises(ValueError, match="row"):
        normalize_adjacency(a_p, "softmax")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="gatv2.*sage|dspose.*gcn"):
        create_conv("chebnet", 4, 4)
    with pytest.raises(ValueError, match="relu"):
        GraphLayer(4, 4, activation="swish")
    with pytest.raises(ValueError, match="dense, sparse"):
        GraphLayer(4, 4, backend="cuda")


@pytest.mark.parametrize("p_mode", ["scalar", "matrix"])
def test_gradient_reaches_p_and_sparse_head_matches(p_mode, keypoint_features, a_p):
    head = GraphHead(C_IN, 16, 8, 2, a_p.float(), p_mode=p_mode, p_init=0.5)
    x = keypoint_features.float()
    out, adj = head(x, return_adjacency=True)
    out.square().sum().backward()
    assert head.p.grad is not None and head.p.grad.abs().sum() > 0
    assert head.p.shape == (() if p_mode == "scalar" else (K, K))
    torch.testing.assert_close(adj["A_m"][0], adj["A_f"][0] + head.p.detach() * a_p.float())
    head.set_backend("sparse")
    torch.testing.assert_close(head(x), out.detach(), atol=1e-5, rtol=1e-5)


def test_head_validates_t_and_modes(a_p):
    for t in (0, K + 1, 2.5):
        with pytest.raises(ValueError, match=r"top-t must be an integer in \[1, K=17\]"):
            GraphHead(8, 8, 8, 2, a_p.float(), t=t)
    with pytest.raises(ValueError, match="unknown graph head mode 'spectral'; valid: dual, feature, physical"):
        GraphHead(8, 8, 8, 2, a_p.float(), mode="spectral")
    assert GraphHead(8, 8, 8, 2, a_p.float(), mode="feature").p is None
    assert GraphHead(8, 8, 8, 2, a_p.float(), mode="physical").p is None
