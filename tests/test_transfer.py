"""Starting a model from another skeleton's weights, slim weight export, shipped weights, and the config hook."""

from __future__ import annotations

import pytest
import torch

from dspose_graph.train.config import ModelConfig, TrainConfig
from dspose_graph.models import create_model
from dspose_graph.models.transfer import init_from_checkpoint
from dspose_graph.models.checkpoint import export_weights, load_checkpoint, load_model, save_checkpoint
from dspose_graph.train.pipeline import build_model
from dspose_graph.weights import SHIPPED, WEIGHTS_DIR, resolve_weights, shipped_path
from dspose_graph.io import read_json, sha256_file
from dspose_graph.topology.schemas import COCO17, LSP14


def test_coco_weights_start_an_lsp_model_with_tokens_matched_by_name(tmp_path, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "coco.pt", "dspose_t", seed=1)
    source = load_checkpoint(ckpt)["state_dict"]
    torch.manual_seed(2)
    model = create_model("dspose_t", schema="lsp")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_checkpoint(model, ckpt)
    assert report["source"] == "coco" and report["new"] == ["upper_neck", "head_top"]
    assert len(report["matched"]) == 12 and ("l_knee", "left_knee") in report["matched"]
    state = model.state_dict()
    tokens = state["encoder.keypoint_tokens"]
    for t, name in enumerate(LSP14.keypoints):
        if name in report["new"]:
            assert torch.equal(tokens[:, t], fresh["encoder.keypoint_tokens"][:, t])
        else:
            coco_name = dict(report["matched"])[name]
            assert torch.equal(tokens[:, t], source["encoder.keypoint_tokens"][:, COCO17.index(coco_name)])
    assert torch.equal(state["head.a_p"], fresh["head.a_p"])  # LSP's own physical topology
    for k, v in state.items():
        if k not in ("encoder.keypoint_tokens", "head.a_p"):
            assert torch.equal(v, source[k]), k


def test_same_skeleton_loads_everything_and_p_matrix_is_remapped(tmp_path, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "m.pt", "dspose_t", seed=3, p_mode="matrix")
    model = create_model("dspose_t", p_mode="matrix")
    report = init_from_checkpoint(model, ckpt)
    assert report["new"] == []
    source = load_checkpoint(ckpt)["state_dict"]
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())
    lsp = create_model("dspose_t", schema="lsp", p_mode="matrix")
    init_from_checkpoint(lsp, ckpt)
    i, j = LSP14.index("l_knee"), LSP14.index("r_hip")
    assert lsp.head.p[i, j] == source["head.p"][COCO17.index("left_knee"), COCO17.index("right_hip")]


def test_mismatched_weights_name_the_file(tmp_path, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "b.pt", "tokenpose_t")
    with pytest.raises(ValueError, match=r"b\.pt.*does not fit"):
        init_from_checkpoint(create_model("dspose_t", schema="lsp"), ckpt)
    other = {"name": "x", "keypoints": ["a", "b"], "skeleton": [], "flip_pairs": []}
    torch.manual_seed(0)
    two = create_model("tokenpose_t", schema=other)
    save_checkpoint(tmp_path / "x.pt", {"model": {"name": "tokenpose_t", "config": {}}, "schema": other,
                                        "state_dict": two.state_dict(), "epoch": 0})
    with pytest.raises(ValueError, match=r"x\.pt: skeletons 'x' and 'lsp' share no keypoint names"):
        init_from_checkpoint(create_model("tokenpose_t", schema="lsp"), tmp_path / "x.pt")


def test_export_weights_drops_resume_state_and_predicts_the_same(tmp_path, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "full.pt")
    state = load_checkpoint(ckpt)
    save_checkpoint(ckpt, {**state, "optimizer": {"state": {}, "param_groups": []}, "rng": {"x": 1}})
    slim = export_weights(ckpt, tmp_path / "slim.pt", recipe="test")
    loaded = load_checkpoint(slim)
    assert "optimizer" not in loaded and "rng" not in loaded and loaded["provenance"]["recipe"] == "test"
    a, _ = load_model(ckpt)
    b, _ = load_model(slim)
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_config_init_from_and_shipped_weights(tmp_path):
    with pytest.raises(ValueError, match="unknown shipped weights 'nope'"):
        shipped_path("nope")
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        resolve_weights(tmp_path / "missing.pt")
    for name in SHIPPED:
        path = resolve_weights(name)
        record = read_json(path.with_suffix(".json"))
        assert sha256_file(path) == record["sha256"]  # the provenance record describes this very file
        ckpt = load_checkpoint(path)
        assert ckpt["provenance"]["recipe"] == record["recipe"] and (WEIGHTS_DIR.parents[1] / record["recipe"]).is_file()
        assert "optimizer" not in ckpt and ckpt["model"]["name"] == record["model"]
    config = TrainConfig(model=ModelConfig(name="dspose_t", overrides={"schema": "lsp"}, init_from="dspose_t_synthetic"))
    model = build_model(config)
    shipped = load_checkpoint(shipped_path("dspose_t_synthetic"))["state_dict"]
    assert torch.equal(model.state_dict()["encoder.patch_embed.weight"], shipped["encoder.patch_embed.weight"])
