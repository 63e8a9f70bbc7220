"""Official TokenPose checkpoint layout (leeyegy/TokenPose) -> our models.

The official state dicts are built here from the official module structure (``pose_tokenpose_b.py``,
``tokenpose_base.py``, ``hr_base.py``): ``pre_feature`` = HRNet stage 1-3 with timm's module names,
``transformer.{keypoint_token, pos_embedding, patch_to_embedding, transformer[S].layers.I.{0,1}.fn...,
mlp_head}``.
"""

from __future__ import annotations

import pytest
import timm
import torch

from dspose_graph.models import create_model
from dspose_graph.models.convert import (
    convert_key,
    convert_tokenpose_state_dict,
    load_tokenpose_weights,
    model_from_tokenpose,
)

# Keys copied from an official TokenPose-B checkpoint's key list (leeyegy/TokenPose, HRNet-W32 stage 3).
OFFICIAL_B_SAMPLE = {
    "pre_feature.conv1.weight": "backbone.net.conv1.weight",
    "pre_feature.layer1.0.downsample.0.weight": "backbone.net.layer1.0.downsample.0.weight",
    "pre_feature.transition2.2.0.0.weight": "backbone.net.transition2.2.0.0.weight",
    "pre_feature.stage3.3.fuse_layers.0.2.0.weight": "backbone.net.stage3.3.fuse_layers.0.2.0.weight",
    "transformer.keypoint_token": "encoder.keypoint_tokens",
    "transformer.pos_embedding": "encoder.pos_embed",
    "transformer.patch_to_embedding.weight": "encoder.patch_embed.weight",
    "transformer.transformer.layers.0.0.fn.norm.weight": "encoder.stages.0.0.norm1.weight",
    "transformer.transformer.layers.11.0.fn.fn.to_qkv.weight": "encoder.stages.0.11.attn.qkv.weight",
    "transformer.transformer.layers.5.0.fn.fn.to_out.0.bias": "encoder.stages.0.5.attn.proj.bias",
    "transformer.transformer.layers.2.1.fn.norm.bias": "encoder.stages.0.2.norm2.bias",
    "transformer.transformer.layers.7.1.fn.fn.net.0.weight": "encoder.stages.0.7.mlp.0.weight",
    "transformer.transformer.layers.11.1.fn.fn.net.3.bias": "encoder.stages.0.11.mlp.2.bias",
    "transformer.mlp_head.3.weight": "head.mlp.3.weight",
    "transformer.transformer3.layers.1.1.fn.fn.net.3.weight": "encoder.stages.2.1.mlp.2.weight",
}


def official_state_dict(backbone: str, k: int, dim: int, mlp_dim: int, depths: tuple[int, ...], patch_dim: int,
                        num_patches: int, head_widths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the official TokenPose key names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    full = timm.create_model(backbone, pretrained=False, head="")
    sd = {}
    for name, v in full.state_dict().items():
        # hr_base.py builds stages 1-3 only; stage 3's last module fuses into branch 0 only.
        dropped = name.startswith(("transition3", "stage4")) or (
            name.startswith(f"stage3.{len(full.stage3) - 1}.fuse_layers.") and not
            name.startswith(f"stage3.{len(full.stage3) - 1}.fuse_layers.0."))
        if dropped:
            continue
        if name.endswith("running_var"):
            sd["pre_feature." + name] = rnd(*v.shape).abs() + 0.5
        else:
            sd["pre_feature." + name] = rnd(*v.shape) if v.dtype.is_floating_point else v.clone()
    sd["transformer.keypoint_token"] = rnd(1, k, dim)
    sd["transformer.pos_embedding"] = rnd(1, num_patches, dim)
    sd["transformer.patch_to_embedding.weight"] = rnd(dim, patch_dim)
    sd["transformer.patch_to_embedding.bias"] = rnd(dim)
    for s, depth in enumerate(depths):
        tname = "transformer.transformer" + ("" if len(depths) == 1 else str(s + 1))
        for i in range(depth):
            p = f"{tname}.layers.{i}"
            sd.update({
                f"{p}.0.fn.norm.weight": rnd(dim), f"{p}.0.fn.norm.bias": rnd(dim),
                f"{p}.0.fn.fn.to_qkv.weight": rnd(3 * dim, dim),
                f"{p}.0.fn.fn.to_out.0.weight": rnd(dim, dim), f"{p}.0.fn.fn.to_out.0.bias": rnd(dim),
                f"{p}.1.fn.norm.weight": rnd(dim), f"{p}.1.fn.norm.bias": rnd(dim),
                f"{p}.1.fn.fn.net.0.weight": rnd(mlp_dim, dim), f"{p}.1.fn.fn.net.0.bias": rnd(mlp_dim),
                f"{p}.1.fn.fn.net.3.weight": rnd(dim, mlp_dim), f"{p}.1.fn.fn.net.3.bias": rnd(dim),
            })
    for j, (a, b) in enumerate(zip(head_widths[:-1], head_widths[1:])):
        sd[f"transformer.mlp_head.{2 * j}.weight"] = rnd(a)
        sd[f"transformer.mlp_head.{2 * j}.bias"] = rnd(a)
        sd[f"transformer.mlp_head.{2 * j + 1}.weight"] = rnd(b, a)
        sd[f"transformer.mlp_head.{2 * j + 1}.bias"] = rnd(b)
    return sd


def tiny_official(k: int = 17, depths: tuple[int, ...] = (4,), head_widths=(96, 192, 768)):
    # tokenpose_t: hrnet_w18_small (16 ch), 96x128 input -> 24x32 map, 3x4 patches -> 8x8 = 64 tokens, dim 96.
    return official_state_dict("hrnet_w18_small", k, 96, 192, depths, 16 * 12, 64, list(head_widths))


def test_key_map_golden_sample():
    for official, ours in OFFICIAL_B_SAMPLE.items():
        assert convert_key(official) == ours
    assert convert_tokenpose_state_dict({"module.transformer.keypoint_token": torch.zeros(1)}) == \
        {"encoder.keypoint_tokens": torch.zeros(1)}


def test_unknown_official_key_is_named():
    with pytest.raises(ValueError, match="transformer.heatmap_head.weight"):
        convert_key("transformer.heatmap_head.weight")


def test_official_tokenpose_b_layout_covers_our_model_exactly():
    sd = official_state_dict("hrnet_w32", 17, 192, 576, (12,), 32 * 12, 256, [192, 384, 3072])
    assert sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k) == 13_514_368
    model = create_model("tokenpose_b", device="meta")
    converted = convert_tokenpose_state_dict(sd)
    own = model.state_dict()
    assert set(converted) == set(own)
    assert all(converted[k].shape == own[k].shape for k in own)


def test_weights_land_where_they_belong_and_outputs_follow():
    sd = tiny_official()
    model = create_model("tokenpose_t").eval()
    assert load_tokenpose_weights(model, sd, "official-b") == []
    torch.testing.assert_close(model.encoder.stages[0][3].attn.qkv.weight,
                               sd["transformer.transformer.layers.3.0.fn.fn.to_qkv.weight"])
    torch.testing.assert_close(model.backbone.net.stage2[0].branches[1][0].conv1.weight,
                               sd["pre_feature.stage2.0.branches.1.0.conv1.weight"])
    torch.testing.assert_close(model.head.mlp[3].bias, sd["transformer.mlp_head.3.bias"])
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        before = model(x)
        sd["transformer.mlp_head.3.bias"] = sd["transformer.mlp_head.3.bias"] + 1.0
        load_tokenpose_weights(model, sd, "official-b")
        torch.testing.assert_close(model(x), before + 1.0)


def test_tokenpose_l_layout_with_three_transformers():
    sd = tiny_official(k=16, depths=(1, 1, 1), head_widths=(288, 768))
    model = create_model("tokenpose_t", schema="mpii", depths=(1, 1, 1), head_layers=1)
    load_tokenpose_weights(model, sd, "official-l")
    torch.testing.assert_close(model.encoder.stages[2][0].mlp[2].weight,
                               sd["transformer.transformer3.layers.0.1.fn.fn.net.3.weight"])


def test_dspose_takes_the_body_and_keeps_its_graph_head():
    sd = tiny_official()
    model = create_model("dspose_t")
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    kept = load_tokenpose_weights(model, sd, "official-b")
    assert kept and all(k.startswith("head.") for k in kept)
    for k, v in model.head.state_dict().items():
        assert torch.equal(v, head_before[k])
    torch.testing.assert_close(model.encoder.keypoint_tokens, sd["transformer.keypoint_token"])


def test_file_with_wrapper_and_module_prefix(tmp_path):
    sd = tiny_official(k=16)
    path = tmp_path / "tokenpose_mpii.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, path)
    model = model_from_tokenpose(path, preset="tokenpose_t")
    assert model.num_keypoints == 16 and model.schema.name == "mpii"
    torch.testing.assert_close(model.encoder.pos_embed, sd["transformer.pos_embedding"])


def test_checkpoint_for_another_k_is_refused():
    sd = tiny_official(k=16)
    with pytest.raises(ValueError, match=r"official-mpii.*K=16 keypoints, the model K=17"):
        load_tokenpose_weights(create_model("tokenpose_t"), sd, "official-mpii")
