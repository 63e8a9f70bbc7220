"""Fast paths (bf16, channels-last, torch.compile) against fp32 eager on the shipped dspose_t, and their errors.

Tolerances (heatmap values peak near 1; displacements in heatmap pixels of the 24x32 map):
bf16 autocast: max |diff| <= 0.15, decoded keypoints move <= 0.1 px on average and <= 2 px at most;
channels-last: 1e-5; compile: 1e-4 (fp32 maths, other kernels / fusion order).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dspose_graph.data.image import normalize_image
from dspose_graph.data.synthetic import generate_image
from dspose_graph.eval.decode import decode_heatmaps
from dspose_graph.models import create_model
from dspose_graph.models.runtime import autocast_context, autocast_dtype, prepare_model
from dspose_graph.models.checkpoint import load_model
from dspose_graph.weights import shipped_path


@pytest.fixture(scope="module")
def shipped() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The shipped dspose_t, 16 generated person images and its fp32 eager heatmaps on them."""
    model, _ = load_model(shipped_path("dspose_t_synthetic"))
    rng = np.random.default_rng(1)
    images = torch.from_numpy(np.stack([normalize_image(generate_image(rng, model.input_size)[0]) for _ in range(16)]))
    with torch.no_grad():
        reference = model(images)
    return model, images, reference


def _run(model, images, **options) -> torch.Tensor:
    prepared = prepare_model(copy.deepcopy(model), **options)
    with torch.no_grad():
        return prepared(images)


def _displacement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (decode_heatmaps(a)[0] - decode_heatmaps(b)[0]).norm(dim=-1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_stays_close_to_fp32(shipped, channels_last):
    model, images, reference = shipped
    out = _run(model, images, precision="bf16", channels_last=channels_last)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert (out - reference).abs().max() <= 0.15
    moved = _displacement(out, reference)
    assert moved.mean() <= 0.1 and moved.max() <= 2.0


def test_channels_last_equals_fp32(shipped):
    model, images, reference = shipped
    prepared = prepare_model(copy.deepcopy(model), channels_last=True)
    conv = next(m for m in prepared.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(prepared(images), reference, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_compile_equals_fp32(shipped):
    model, images, reference = shipped
    torch.testing.assert_close(_run(model, images, compile=True), reference, rtol=0, atol=1e-4)


def test_compile_uses_the_dense_graph_backend(monkeypatch):
    model = create_model("dspose_t", backend="sparse")
    monkeypatch.setattr(torch, "compile", lambda m, mode=None: m)  # only the preparation is under test here
    prepared = prepare_model(model, compile=True)
    assert prepared.compiled and all(layer.backend == "dense" for layer in model.head.layers)
    assert prepare_model(create_model("dspose_t", backend="sparse")).original.head.layers[0].backend == "sparse"


def test_fp32_is_a_plain_call(shipped):
    model, images, reference = shipped
    prepared = prepare_model(model)
    assert prepared.module is model and not torch.is_autocast_enabled("cpu")
    with torch.no_grad():
        assert torch.equal(prepared(images), reference)


def test_autocast_context_matches_the_precision():
    with autocast_context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_context("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_bad_precisions_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: fp32, bf16, fp16"):
        autocast_dtype("fp8", "cpu")
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device, got cpu"):
        prepare_model(torch.nn.Linear(2, 2), precision="fp16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Old GPU")
    with pytest.raises(ValueError, match="'bf16' is not supported by Old GPU"):
        autocast_dtype("bf16", "cuda:0")
    assert autocast_dtype("fp16", "cuda:0") == torch.float16
