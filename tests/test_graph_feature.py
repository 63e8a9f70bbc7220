"""Feature-space adjacency (Eq. 5-7): top-t rows with self, stable ties, validation, edges == dense."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dspose_graph.topology.annotations import load_coco_statistics
from dspose_graph.data.image import normalize_image
from dspose_graph.data.synthetic import generate_image
from dspose_graph.models.checkpoint import load_model
from dspose_graph.weights import shipped_path
from dspose_graph.graph.feature import cosine_similarity_matrix, dense_to_edges, edges_to_dense, feature_adjacency, topk_mask


@pytest.fixture(scope="module")
def keypoint_features(synthetic_coco) -> torch.Tensor:
    """Keypoint features of generated COCO-format persons: normalised (x, y, visible) of each keypoint, (B, 17, 3)."""
    stats = load_coco_statistics(synthetic_coco / "annotations" / "person_keypoints_train.json")
    xy = (stats.keypoints - stats.centers[:, None]) / stats.scales[:, None, None]
    feats = np.concatenate([xy, stats.annotated[..., None].astype(np.float64)], axis=-1)
    return torch.tensor(feats[:24], dtype=torch.float32)


@pytest.mark.parametrize("t", [1, 2, 4, 17])
def test_exactly_t_entries_per_row_with_self_included(keypoint_features, t):
    a_f = feature_adjacency(keypoint_features, t=t, binary=True)
    assert a_f.shape == (24, 17, 17)
    assert torch.equal(a_f.sum(-1), torch.full((24, 17), float(t)))
    assert torch.equal(torch.diagonal(a_f, dim1=1, dim2=2), torch.ones(24, 17))
    weighted = feature_adjacency(keypoint_features, t=t)
    kept = a_f.bool()
    assert not weighted[~kept].any()
    assert torch.equal(weighted[kept], cosine_similarity_matrix(keypoint_features)[kept])


def test_kept_entries_are_the_most_similar_others(keypoint_features):
    t = 4
    sim = cosine_similarity_matrix(keypoint_features)
    ref = torch.nn.functional.cosine_similarity(keypoint_features[:, :, None], keypoint_features[:, None], dim=-1)
    torch.testing.assert_close(sim, ref, atol=1e-5, rtol=0)
    a_f = feature_adjacency(keypoint_features, t=t)
    for b in range(keypoint_features.shape[0]):
        for i in range(17):
            kept = set(torch.nonzero(a_f[b, i]).flatten().tolist())
            others = sim[b, i].clone()
            others[i] = -float("inf")
            worst_kept = min(sim[b, i, j] for j in kept if j != i)
            dropped = [j for j in range(17) if j not in kept]
            assert i in kept and all(others[j] <= worst_kept for j in dropped)


def test_ties_go_to_the_lower_index_and_are_deterministic():
    x = torch.ones(2, 6, 3)  # every pair equally similar
    mask = topk_mask(cosine_similarity_matrix(x), 3)
    for i in range(6):
        expected = {i} | set([j for j in range(6) if j != i][:2])
        assert set(torch.nonzero(mask[0, i]).flatten().tolist()) == expected
    assert torch.equal(mask, topk_mask(cosine_similarity_matrix(x), 3))


@pytest.mark.parametrize("t", [0, 18, -1, 2.0, True, "4"])
def test_t_is_validated(keypoint_features, t):
    with pytest.raises(ValueError, match=r"top-t must be an integer in \[1, K=17\]"):
        feature_adjacency(keypoint_features, t=t)


def test_bad_feature_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(B, K, C\)"):
        feature_adjacency(torch.ones(17, 3))


def test_edges_are_exactly_the_dense_entries(keypoint_features):
    a_f, edge_index, edge_weight = feature_adjacency(keypoint_features, t=4, return_edges=True)
    b, k = keypoint_features.shape[:2]
    assert edge_index.shape == (2, b * k * 4) and edge_weight.shape == (b * k * 4,)
    assert torch.equal(edges_to_dense(edge_index, edge_weight, b, k), a_f)
    # Source j -> target i for a_f[b, i, j]; every target receives exactly t messages, self among them.
    src, dst = edge_index
    assert torch.equal(torch.bincount(dst, minlength=b * k), torch.full((b * k,), 4))
    assert int((src == dst).sum()) == b * k
    ei2, ew2 = dense_to_edges(a_f, a_f != 0)
    assert torch.equal(ei2, edge_index) and torch.equal(ew2, edge_weight)


def test_edges_between_graphs_are_rejected():
    with pytest.raises(ValueError, match="different graphs"):
        edges_to_dense(torch.tensor([[0], [5]]), torch.ones(1), 2, 3)


def test_gradient_flows_through_the_kept_similarities(keypoint_features):
    x = keypoint_features.clone().requires_grad_(True)
    feature_adjacency(x, t=4).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def shipped_head_inputs() -> tuple[list[torch.Tensor], int]:
    """The fp32 inputs ``(64, 17, C)`` of each graph layer of the shipped dspose_t on 64 generated images."""
    model, _ = load_model(shipped_path("dspose_t_synthetic"))
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([normalize_image(generate_image(rng, model.input_size)[0]) for _ in range(64)]))
    inputs: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()))
             for layer in model.head.layers]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return inputs, model.config.t


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_top_t_under_autocast_equals_fp32_on_the_shipped_weights(shipped_head_inputs, dtype):
    inputs, t = shipped_head_inputs
    for h in inputs:
        ref = feature_adjacency(h, t)
        with torch.autocast("cpu", dtype=dtype):
            amp = feature_adjacency(h, t)
            amp_from_low = feature_adjacency(h.to(dtype), t)  # features already in the autocast dtype
        assert amp.dtype == torch.float32
        assert torch.equal(amp != 0, ref != 0)  # the same top-t set in every one of the 64 x 17 rows
        torch.testing.assert_close(amp, ref, rtol=0, atol=1e-6)
        assert cosine_similarity_matrix(h.to(dtype)).dtype == torch.float32
        assert amp_from_low.dtype == torch.float32


def test_low_precision_similarities_would_change_the_graph(shipped_head_inputs):
    """The old path (S computed in bf16 under autocast) chose other top-t sets: the test above can fail."""
    inputs, t = shipped_head_inputs
    changed = 0
    for h in inputs:
        xn = F.normalize(h, dim=-1).bfloat16()
        old = topk_mask((xn @ xn.transpose(1, 2)).float(), t)
        changed += int((old != (feature_adjacency(h, t) != 0)).any(-1).sum())
    assert changed > 0
