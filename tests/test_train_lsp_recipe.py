"""What the real-image CPU recipe relies on: ``data.kind: lspet`` through the training pipeline with the LSP
metrics, precision ``auto`` choosing by the CPU's instructions and a measurement, throughput in the epoch rows,
and ``model.init_exclude`` (a model at another input size started from a trained body)."""

from __future__ import annotations

import csv

import pytest
import torch

from dspose_graph.models import create_model
from dspose_graph.models import runtime
from dspose_graph.models.checkpoint import checkpoint_state, save_checkpoint
from dspose_graph.models.transfer import init_from_checkpoint
from dspose_graph.train import DataConfig, EvalConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from dspose_graph.train.pipeline import train


def test_precision_auto_needs_native_bf16_and_a_faster_measurement(monkeypatch):
    assert runtime.resolve_precision("bf16", "cpu") == ("bf16", "as configured")
    assert runtime.resolve_precision("auto", "cuda")[0] == "fp32"  # official TokenPose trains in fp32
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})
    precision, why = runtime.resolve_precision("auto", "cpu")
    assert precision == "fp32" and "no native bf16 instructions" in why and "avx512_bf16" in why
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(runtime, "_bf16_speedup", lambda: 1.8)
    precision, why = runtime.resolve_precision("auto", "cpu")
    assert precision == "bf16" and "1.80x" in why
    monkeypatch.setattr(runtime, "_bf16_speedup", lambda: 0.6)  # flags present, but slower here: fp32
    precision, why = runtime.resolve_precision("auto", "cpu")
    assert precision == "fp32" and "0.60x" in why
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        runtime.resolve_precision("fp8", "cpu")


def test_bf16_speedup_measures_a_positive_ratio_once_per_process():
    runtime._bf16_speedup.cache_clear()
    first = runtime._bf16_speedup(repeats=1)
    assert first > 0 and runtime._bf16_speedup(repeats=1) == first
    assert runtime._bf16_speedup.cache_info().misses == 1


def _small_checkpoint(tmp_path):
    torch.manual_seed(0)
    small = create_model("dspose_t", schema="lsp")
    return small, save_checkpoint(tmp_path / "small.pt", checkpoint_state(small), keep_previous=False)


def test_another_input_size_resamples_the_heatmap_layer_and_recomputes_the_position_table(tmp_path):
    small, _ = _small_checkpoint(tmp_path)
    layer = "head.layers.1.conv.lin"
    with torch.no_grad():  # heatmap-layer rows laid out as 32x24 maps: a constant weight and a ramp along x
        small.state_dict()[f"{layer}.weight"].fill_(0.25)
        small.state_dict()[f"{layer}.bias"].copy_(torch.arange(24.0).repeat(32))
    path = save_checkpoint(tmp_path / "ramp.pt", checkpoint_state(small), keep_previous=False)
    big = create_model("dspose_t", schema="lsp", input_size=(192, 256))
    grid = big.state_dict()["encoder.pos_embed"].clone()  # the sine table of the 16x16 token grid
    report = init_from_checkpoint(big, path)
    assert report["resampled"] == [f"{layer}.weight", f"{layer}.bias"]
    assert report["recomputed"] == ["encoder.pos_embed"]
    own, src = big.state_dict(), small.state_dict()
    torch.testing.assert_close(own["encoder.pos_embed"], grid)
    torch.testing.assert_close(own[f"{layer}.weight"], torch.full((64 * 48, 192), 0.25))
    # Bilinear 2x upsampling (pixel centres) of a ramp: x' = (x + 0.5) / 2 - 0.5, exact away from the borders.
    bias = own[f"{layer}.bias"].reshape(64, 48)
    torch.testing.assert_close(bias[:, 1:-1], ((torch.arange(1.0, 47.0) + 0.5) / 2 - 0.5).expand(64, 46))
    for k in own:  # everything else is the trained model's
        if k not in (f"{layer}.weight", f"{layer}.bias", "encoder.pos_embed"):
            torch.testing.assert_close(own[k], src[k], msg=k)


def test_init_exclude_keeps_named_parts_fresh(tmp_path):
    small, path = _small_checkpoint(tmp_path)
    torch.manual_seed(1)
    model = create_model("dspose_t", schema="lsp")
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    report = init_from_checkpoint(model, path, exclude=["head."])
    assert report["fresh"] == ["head."]
    own, src = model.state_dict(), small.state_dict()
    for k in own:
        torch.testing.assert_close(own[k], fresh_head[k] if k.startswith("head.") else src[k], msg=k)
    with pytest.raises(ValueError, match="init_exclude prefix 'heads.' matches no tensor"):
        init_from_checkpoint(model, path, exclude=["heads."])
    graphconv = create_model("dspose_t", schema="lsp", conv="graphconv")  # another head: its weights start fresh
    with pytest.raises(ValueError, match="unexpected keys"):
        init_from_checkpoint(graphconv, path)
    assert init_from_checkpoint(graphconv, path, exclude=["head."])["fresh"] == ["head."]
    torch.testing.assert_close(graphconv.state_dict()["encoder.keypoint_tokens"], src["encoder.keypoint_tokens"])
    other = create_model("dspose_t", schema="lsp", dim=128, heads=4)
    with pytest.raises(ValueError, match="shape mismatches"):
        init_from_checkpoint(other, path)


def test_lspet_run_logs_lsp_metrics_throughput_and_the_curve(tmp_path, data_root):
    config = TrainConfig(
        model=ModelConfig(name="dspose_t", overrides={"schema": "lsp"}),
        data=DataConfig(kind="lspet", root=str(data_root / "lspet"), limit_train=16, limit_val=8, image_dtype="uint8"),
        optim=OptimConfig(epochs=1, batch_size=8, milestones=[], precision="auto"),
        eval=EvalConfig(every=1, flip_test=True, batch_size=8, precision="auto"),
        run=RunConfig(out_dir=str(tmp_path / "run"), workers=0, progress=False, tensorboard=False, loader_probe=2),
    )
    assert config.best_metric == "torso_PCK@0.2"
    result = train(config)
    assert len(result.train_set) == 16 and len(result.val_set) == 8
    metrics = result.metrics
    for key in ("torso_PCK@0.2", "torso_PCK@0.2/head_top", "torso_persons", "swap", "PCK@0.2", "AP"):
        assert key in metrics, key
    assert 0 <= metrics["torso_PCK@0.2"] <= 100 and metrics["torso_persons"] <= 8
    row = result.history[0]
    assert row["global_step"] == 2 and row["minutes"] > 0 and row["img_s"] > 0
    assert 0 <= row["data_wait_pct"] <= 100 and row["loader_img_s"] > 0
    with open(tmp_path / "run" / "epochs.csv") as f:
        header = next(csv.reader(f))
    assert {"img_s", "data_wait_pct", "loader_img_s", "minutes", "torso_PCK@0.2"} <= set(header)
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 0


def test_cpu_description_names_the_model_cores_and_vector_extensions(monkeypatch):
    info = {"model name": "Example CPU 9000", "flags": "fpu sse2 avx2 avx512f avx512_bf16"}
    monkeypatch.setattr(runtime, "_cpuinfo", info.get)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert runtime.cpu_flags() >= {"avx2", "avx512_bf16"}
    assert runtime.cpu_description() == "Example CPU 9000, 2 cores, AVX2, AVX-512, AVX512-BF16, no AMX"
    info["flags"] = "avx2 amx_tile amx_bf16"
    assert runtime.cpu_description() == "Example CPU 9000, 2 cores, AVX2, AMX"
