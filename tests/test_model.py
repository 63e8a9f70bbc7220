"""DSPose model: timm stage-3 cut, parameter counts vs paper/official, forward contracts, round trips, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import timm
import torch

from dspose_graph.models import (
    DSPose,
    create_model,
    create_model_from_config,
    list_models,
    load_state_dict_checked,
)
from dspose_graph.graph.layers import normalize_adjacency
from dspose_graph.models.backbone import HRNetStage3
from dspose_graph.topology.adjacency import physical_adjacency
from dspose_graph.topology.files import load_topology
from dspose_graph.topology.schemas import COCO17, MPII16


def n_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@pytest.fixture(scope="module")
def tiny() -> DSPose:
    torch.manual_seed(0)
    return create_model("dspose_t")


@pytest.fixture(scope="module")
def crops(synthetic_coco) -> torch.Tensor:
    """Two generated person images resized to the tiny preset's 96x128 input, ImageNet-normalised."""
    from PIL import Image

    files = sorted((synthetic_coco / "images" / "val").glob("*.jpg"))[:2]
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((96, 128)), dtype=np.float32) / 255.0 for f in files]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


# --- backbone ---------------------------------------------------------------------------------------------

def test_stage3_cut_equals_timm_stage3_high_resolution_branch():
    ours = HRNetStage3("hrnet_w18_small").eval()
    full = timm.create_model("hrnet_w18_small", pretrained=False, head="").eval()
    missing, unexpected = full.load_state_dict(ours.net.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("transition3", "stage4", "stage3.0.fuse_layers.1",
                                                "stage3.0.fuse_layers.2")) for k in missing)
    captured = {}
    full.stage3.register_forward_hook(lambda m, i, o: captured.update(stage3=o[0]))
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        full(x)
        y = ours(x)
    assert y.shape == (2, 16, 32, 24)
    torch.testing.assert_close(y, captured["stage3"])
    assert not hasattr(ours.net, "stage4") and not hasattr(ours.net, "transition3")


def test_random_backbone_is_initialised_as_official_tokenpose():
    # HRNET_base.init_weights: conv weights ~ N(0, 0.001^2), zero biases, BatchNorm 1 / 0 (not timm's Kaiming).
    torch.manual_seed(0)
    net = HRNetStage3("hrnet_w32").net
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert len(convs) > 100 and weights.numel() > 1_000_000
    assert abs(weights.std().item() - 0.001) < 2e-5 and abs(weights.mean().item()) < 2e-6
    assert all(m.weight.std().item() < 0.0013 for m in convs if m.weight.numel() >= 1000)
    assert all(m.bias is None or not m.bias.any() for m in convs)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(bool((m.weight == 1).all() and (m.bias == 0).all() and (m.running_var == 1).all())
                         for m in norms)


def test_backbone_sizes_match_tokenpose():
    # Official TokenPose HRNet stage 1-3 (multi_scale_output=False) parameter counts.
    assert n_params(HRNetStage3("hrnet_w32", device="meta")) == 7_685_632
    assert n_params(HRNetStage3("hrnet_w48", device="meta")) == 16_705_824


def test_pretrained_from_local_file(tmp_path):
    full = timm.create_model("hrnet_w18_small", pretrained=False)  # with classifier: a real timm checkpoint layout
    path = tmp_path / "hrnet_w18_small.pth"
    torch.save(full.state_dict(), path)
    ours = HRNetStage3("hrnet_w18_small", pretrained=path)
    for k, v in ours.net.state_dict().items():
        torch.testing.assert_close(v, full.state_dict()[k])
    model = create_model("dspose_t", pretrained=str(path))
    torch.testing.assert_close(model.backbone.net.conv1.weight, full.conv1.weight)
    torch.save(timm.create_model("hrnet_w18_small_v2", pretrained=False).state_dict(), tmp_path / "v2.pth")
    with pytest.raises(ValueError, match=r"v2\.pth.*hrnet_w18_small"):
        HRNetStage3("hrnet_w18_small", pretrained=tmp_path / "v2.pth")
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        HRNetStage3("hrnet_w18_small", pretrained=tmp_path / "nothere.pth")


# --- parameter counts ---------------------------------------------------------------------------------------

def test_meta_device_counts_equal_materialised_counts():
    assert n_params(create_model("dspose_t", device="meta")) == n_params(create_model("dspose_t"))


def test_tokenpose_counts_equal_official_code():
    b = create_model("tokenpose_b", device="meta")
    assert (n_params(b, trainable_only=True), n_params(b)) == (13_465_216, 13_514_368)
    assert n_params(create_model("tokenpose_l", device="meta")) == 21_492_448  # official TokenPose-L/D6, MPII 256x256
    coco_l = create_model("tokenpose_l", schema="coco", input_size=(192, 256), patch_size=(3, 4), device="meta")
    assert abs(n_params(coco_l, trainable_only=True) / 1e6 - 20.8) < 0.1  # the paper's 20.8M


@pytest.mark.parametrize("name, overrides, paper_m", [
    ("dspose_b", {}, 13.5), ("dspose_b", {"head_layers": 1}, 12.9), ("dspose_l", {}, 20.8),
])
def test_dspose_counts_match_paper(name, overrides, paper_m):
    model = create_model(name, device="meta", **overrides)
    assert abs(n_params(model, trainable_only=True) / 1e6 - paper_m) < 0.1
    assert abs(n_params(model) / 1e6 - paper_m) < 0.15


# --- forward contract ---------------------------------------------------------------------------------------

def test_forward_shapes_and_adjacency_in_train_mode(tiny, crops):
    tiny.train()
    heat, adj = tiny(crops, return_adjacency=True)
    assert tiny.input_size == (96, 128) and tiny.heatmap_size == (24, 32)
    assert heat.shape == (2, 17, 32, 24)
    assert adj["A_p"].shape == (17, 17) and len(adj["A_f"]) == len(adj["A_m"]) == tiny.config.head_layers
    for a_f, a_m in zip(adj["A_f"], adj["A_m"]):
        assert a_f.shape == a_m.shape == (2, 17, 17)
        assert ((a_f != 0).sum(-1) == 4).all()
        torch.testing.assert_close(a_m, normalize_adjacency(a_f + adj["p"] * adj["A_p"], tiny.config.normalize))
    torch.testing.assert_close(adj["A_p"], torch.from_numpy(physical_adjacency(COCO17.group_labels(), 0.9)))
    heat.square().mean().backward()
    assert tiny.head.p.grad is not None and tiny.head.p.grad != 0
    one = tiny(crops[:1])
    assert one.shape == (1, 17, 32, 24)
    tiny.zero_grad()


def test_eval_is_deterministic_and_sparse_backend_agrees(crops):
    torch.manual_seed(1)
    model = create_model("dspose_t", normalize="none").eval()
    with torch.no_grad():
        a, b = model(crops), model(crops)
        model.head.set_backend("sparse")
        c = model(crops)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["mlp", "feature", "dual"])
def test_state_dict_round_trip_through_json_config(head, crops):
    torch.manual_seed(2)
    model = create_model("dspose_t", head=head, conv="gcn", t=3).eval()
    config = json.loads(json.dumps(dataclasses.asdict(model.config)))
    clone = create_model_from_config(config).eval()
    load_state_dict_checked(clone, model.state_dict(), "round-trip")
    assert clone.config == model.config
    with torch.no_grad():
        assert torch.equal(model(crops), clone(crops))


def test_topology_overrides():
    shipped = create_model("dspose_t", topology="coco")
    expected = torch.from_numpy(load_topology("coco").adjacency(0.9))
    torch.testing.assert_close(shipped.head.a_p, expected)
    groups = [[0, 1, 2, 3, 4], list(range(5, 17))]
    by_groups = create_model("dspose_t", topology=groups, a=0.8)
    assert by_groups.head.a_p[0, 4] == pytest.approx(1.0) and by_groups.head.a_p[0, 5] == pytest.approx(0.2)
    by_matrix = create_model("dspose_t", topology=np.eye(17))
    assert torch.equal(by_matrix.head.a_p, torch.eye(17))
    assert json.loads(json.dumps(dataclasses.asdict(by_matrix.config)))["topology"] == np.eye(17).tolist()
    mpii = create_model("dspose_t", schema="mpii")
    assert mpii.num_keypoints == 16 and mpii.schema == MPII16
    custom = create_model("dspose_t", num_keypoints=5, topology=[[0, 1], [2, 3, 4]])
    assert custom.encoder.keypoint_tokens.shape[1] == 5 and custom(torch.zeros(1, 3, 128, 96)).shape[1] == 5


def test_list_models():
    assert {"dspose_b", "dspose_l", "dspose_t", "tokenpose_b", "tokenpose_l"} <= set(list_models())


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, match", [
    ({"conv": "chebnet"}, "valid: dspose, gat, gatv2, gcn, graphconv, sage, transformer"),
    ({"t": 0}, r"top-t must be an integer in \[1, K=17\]"),
    ({"t": 18}, r"top-t must be an integer in \[1, K=17\]"),
    ({"a": 0.5}, r"a=0.5 is outside the paper's range \(0.7, 1\)"),
    ({"a": 1.0}, r"outside the paper's range"),
    ({"topology": "mpii"}, "16 keypoints but the model's schema 'coco' has K=17"),
    ({"topology": np.eye(16).tolist()}, r"\(16, 16\); expected \(17, 17\)"),
    ({"input_size": (100, 128)}, "not divisible by the patch grid"),
    ({"input_size": (98, 128)}, "divisible by the backbone stride 4"),
    ({"head": "conv"}, "valid: mlp, feature, physical, dual"),
    ({"backbone": "resnet50"}, "valid: hrnet_w18_small"),
    ({"depth": 3}, "unknown override.*valid: num_keypoints"),
    ({"num_keypoints": 5}, "defines no keypoint groups"),
])
def test_bad_configuration_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model("dspose_t", **overrides)


def test_unknown_preset_lists_names():
    with pytest.raises(ValueError, match="dspose_b.*dspose_l.*tokenpose_b"):
        create_model("dspose_xl")


def test_checkpoint_for_another_k_is_refused(tiny):
    mpii_state = create_model("dspose_t", schema="mpii").state_dict()
    with pytest.raises(ValueError, match=r"ckpt/mpii\.pth.*K=16 keypoints, the model K=17"):
        load_state_dict_checked(tiny, mpii_state, "ckpt/mpii.pth")
    partial = {k: v for k, v in tiny.state_dict().items() if not k.startswith("head.")}
    with pytest.raises(ValueError, match="missing keys"):
        load_state_dict_checked(tiny, partial, "partial.pth")


def test_wrong_image_size_is_refused(tiny):
    with pytest.raises(ValueError, match="expects 96x128"):
        tiny(torch.zeros(1, 3, 256, 192))
