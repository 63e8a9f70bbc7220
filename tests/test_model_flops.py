"""FLOPs per image and parameter counts (``dspose_graph.models.flops``, ``models.complexity``, ``dspose info
--flops``): hand-counted small modules, the attention that a CPU count would miss, and every preset beside the
paper's figures."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dspose_graph.cli.main import main
from dspose_graph.models import create_model, list_models
from dspose_graph.models.complexity import (PAPER_FLOPS_NOTE, count_parameters, flops_record, format_flops_table,
                                            format_model_report, model_report, parameter_counts, preset_costs)
from dspose_graph.models.presets import PAPER_PARAMS_M
from dspose_graph.models.flops import count_forward_flops, preset_flops
from dspose_graph.models.transformer import Attention


class _ConvThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)  # 16x12 -> 8x6
        self.act = nn.ReLU()
        self.fc = nn.Linear(8 * 8 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


class _AttentionOnImage(nn.Module):
    """Treats each image row as a token: ``(B, 3, h, w)`` -> ``(B, h, 3 w)`` tokens through one attention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = Attention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x.permute(0, 2, 1, 3).flatten(2))


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_conv_and_linear_are_two_flops_per_multiply_add_per_image(device):
    model = _ConvThenLinear().to(device)
    conv = 2 * (8 * 8 * 6) * (3 * 3 * 3)  # outputs x multiply-adds per output
    fc = 2 * 5 * (8 * 8 * 6)
    for batch in (1, 3):
        flops, by_module = count_forward_flops(model, (12, 16), batch=batch, device=device)
        assert flops == conv + fc
        assert by_module == {"conv": conv, "fc": fc}


def test_attention_is_counted_on_the_meta_device():
    n, w, heads = 20, 16, 4  # 20 tokens of 3 * 16 = 48 channels
    d = 3 * w
    flops, by_module = count_forward_flops(_AttentionOnImage(d, heads).to("meta"), (w, n))
    qkv, proj = 2 * n * d * 3 * d, 2 * n * d * d
    scores_and_mix = 2 * (2 * n * n * d)  # q k^T and (softmax) v, over all heads
    assert flops == qkv + scores_and_mix + proj
    assert by_module == {"attn": flops}


def test_presets_count_per_image_in_parts_that_add_up():
    b, t = preset_flops("dspose_b"), preset_flops("dspose_t")
    assert set(b.by_module) == {"backbone", "encoder", "head"}
    assert sum(b.by_module.values()) == b.flops
    assert b.input_size == (192, 256) and t.input_size == (96, 128)
    assert b.gmacs == pytest.approx(b.gflops / 2)
    # Same backbone and Transformer, different heads: the graph head's adjacency and mixing cost something.
    tokenpose = preset_flops("tokenpose_b")
    assert tokenpose.by_module["backbone"] == b.by_module["backbone"]
    assert tokenpose.by_module["encoder"] == b.by_module["encoder"]
    assert tokenpose.by_module["head"] != b.by_module["head"]
    # A 2x larger crop in each side quadruples the backbone's convolutions (same channels, 4x the pixels).
    assert preset_flops("dspose_t", input_size=(192, 256)).by_module["backbone"] == 4 * t.by_module["backbone"]


def test_parameter_counts_split_the_model_into_parts_that_add_up():
    linear = nn.Linear(3, 4)
    linear.bias.requires_grad_(False)
    assert count_parameters(linear) == (12, 4)
    counts = parameter_counts(create_model("dspose_t", device="meta"))
    assert list(counts) == ["backbone", "encoder", "head", "total"]
    for i in (0, 1):
        assert sum(counts[part][i] for part in ("backbone", "encoder", "head")) == counts["total"][i]
    assert counts["total"][1] > 0, "the frozen sine table"
    assert parameter_counts(create_model("dspose_t")) == counts, "meta counts what a real model has"


def test_preset_costs_and_their_record_carry_the_papers_figure():
    (name, flops, params), = preset_costs(["dspose_b"])
    assert name == "dspose_b" and flops == preset_flops("dspose_b")
    assert params == count_parameters(create_model("dspose_b", device="meta"))[0]
    record = flops_record(flops)
    assert record["paper"] == "13.5M (Tab. 1-2, COCO 256x192)" and record["input_size"] == [192, 256]
    assert record["flops"] == flops.flops and record["gmacs"] == pytest.approx(flops.gmacs, abs=1e-4)
    assert flops_record(preset_flops("dspose_t"))["paper"] is None


def test_a_models_report_as_json_and_text(capsys):
    model = create_model("dspose_b", device="meta")
    record = model_report(model, PAPER_PARAMS_M["dspose_b"])
    assert record["paper_params_m"] == 13.5 and "flops" not in record and record["config"]["dim"] == model.config.dim
    assert record["parameters"]["total"] == dict(zip(("trainable", "frozen"), parameter_counts(model)["total"]))
    text = format_model_report("dspose_b", model, PAPER_PARAMS_M["dspose_b"])
    assert text.splitlines()[0].startswith("dspose_b: ") and "input 192x256" in text.splitlines()[0]
    assert f"{record['parameters']['total']['trainable'] / 1e6:.3f}M trainable" in text and "paper: 13.5M" in text
    flops = preset_flops("dspose_t")
    text = format_model_report("dspose_t", create_model("dspose_t", device="meta"), flops=flops)
    assert "ours:" not in text and f"{flops.gflops:.3f} GFLOPs" in text and text.endswith(PAPER_FLOPS_NOTE)
    table = format_flops_table([("dspose_b", preset_flops("dspose_b"), 13_000_000)]).splitlines()
    assert len(table) == 4 and table[2].startswith("dspose_b")
    assert table[2].endswith("13.00M  13.5M (Tab. 1-2, COCO 256x192)")


def test_info_flops_lists_every_preset_beside_the_paper(capsys):
    assert main(["info", "--flops", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert sorted(table) == list_models()
    for name, row in table.items():
        assert row["gflops"] > 0 and row["params"] > 0, name
    assert table["dspose_l"]["paper"].startswith("20.9M (Tab. 4")
    assert table["tokenpose_l"]["paper"].startswith("21.4M (Tab. 4")
    assert table["dspose_t"]["paper"] is None
    assert table["dspose_l"]["gflops"] > table["dspose_b"]["gflops"] > table["dspose_t"]["gflops"]

    assert main(["info", "--flops"]) == 0
    text = capsys.readouterr().out
    assert "no FLOPs figure" in text
    for name in list_models():
        assert f"{table[name]['flops'] / 1e9:.3f}" in text


def test_info_one_preset_with_overrides_prints_its_flops(capsys):
    assert main(["info", "dspose_t", "--flops", "--set", "model.overrides.head_layers=1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)["flops"]
    assert one["flops"] == preset_flops("dspose_t", head_layers=1).flops
    assert one["flops"] < preset_flops("dspose_t").flops
