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
from dspose_graph.models.runtime import _torch_older_than, autocast_context, autocast_dtype, prepare_model
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


def _cpu_autocast() -> tuple[bool, torch.dtype]:
    """Whether CPU autocast is on, and its dtype; torch 2.3 has only the CPU-specific getters (no device argument)."""
    try:
        return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except TypeError:  # torch < 2.4: is_autocast_enabled() takes no arguments
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


def test_fp32_is_a_plain_call(shipped):
    model, images, reference = shipped
    prepared = prepare_model(model)
    assert prepared.module is model and not _cpu_autocast()[0]
    with torch.no_grad():
        assert torch.equal(prepared(images), reference)


def test_autocast_context_matches_the_precision():
    with autocast_context("bf16", "cpu"):
        assert _cpu_autocast() == (True, torch.bfloat16)
    with autocast_context("fp32", "cpu"):
        assert not _cpu_autocast()[0]


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


def test_freeze_needs_compile_and_no_mode():
    with pytest.raises(ValueError, match="freeze=True needs compile=True"):
        prepare_model(torch.nn.Linear(2, 2), freeze=True)
    with pytest.raises(ValueError, match="freeze=True cannot be combined with compile_mode='max-autotune'"):
        prepare_model(torch.nn.Linear(2, 2), compile=True, compile_mode="max-autotune", freeze=True)


def test_freeze_asks_inductor_for_freezing(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append(kw) or m)
    assert prepare_model(torch.nn.Linear(2, 2), compile=True, freeze=True).frozen
    assert not prepare_model(torch.nn.Linear(2, 2), compile=True).frozen
    assert calls == [{"options": {"freezing": True}}, {"mode": None}]


@pytest.mark.slow
def test_compile_with_freezing_equals_fp32(shipped):
    """Frozen weights: BatchNorm folded into the convolutions changes fp32 rounding only."""
    model, images, reference = shipped
    out = _run(model, images, compile=True, freeze=True)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-4)


# --- training steps ---------------------------------------------------------------------------------------------
# Tolerances, against the fp32 eager step of the same weights and batch (measured in brackets): channels-last:
# loss 1e-6 relative (3e-7), gradients 2e-3 of their largest value (4e-4: NHWC kernels sum in another order and
# training-mode BatchNorm amplifies it); bf16 (+ channels-last): loss 1 % relative (0.2 %), gradient cosine
# >= 0.99 (0.9993); compile: loss 1e-5 relative, gradients 2e-3 of their largest value.

def _train_step(model, images, target, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and flattened gradients of one training-mode step of a copy of ``model`` on a fast path."""
    copied = copy.deepcopy(model)
    prepared = prepare_model(copied, **options)
    prepared.module.train()
    with prepared.autocast():
        pred = prepared.module(prepared.prepare_input(images))
    loss = torch.nn.functional.mse_loss(pred.float(), target)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in copied.parameters() if p.grad is not None])


@pytest.fixture(scope="module")
def step_reference(shipped):
    """Targets (the fp32 heatmaps moved one pixel right) and the fp32 eager loss and gradients."""
    model, images, reference = shipped
    target = reference.roll(1, dims=-1)
    return target, *_train_step(model, images[:8], target[:8])


def _close_step(got, ref, loss_rtol: float, grad_tol: float | None = None, cosine: float | None = None) -> None:
    (loss, grads), (ref_loss, ref_grads) = got, ref
    assert abs(loss - ref_loss) <= loss_rtol * ref_loss, (float(loss), float(ref_loss))
    if grad_tol is not None:
        assert (grads - ref_grads).abs().max() <= grad_tol * ref_grads.abs().max()
    if cosine is not None:
        assert torch.nn.functional.cosine_similarity(grads, ref_grads, dim=0) >= cosine


def test_train_step_channels_last_equals_fp32(shipped, step_reference):
    model, images, _ = shipped
    target, *ref = step_reference
    _close_step(_train_step(model, images[:8], target[:8], channels_last=True), ref, 1e-6, grad_tol=2e-3)


@pytest.mark.parametrize("channels_last", [False, True])
def test_train_step_bf16_stays_close_to_fp32(shipped, step_reference, channels_last):
    model, images, _ = shipped
    target, *ref = step_reference
    got = _train_step(model, images[:8], target[:8], precision="bf16", channels_last=channels_last)
    _close_step(got, ref, 1e-2, cosine=0.99)


_TORCH_2_3 = _torch_older_than(2, 4)  # the version check compile_model warns by


@pytest.mark.slow
@pytest.mark.xfail(_TORCH_2_3, strict=True, reason=(
    "torch 2.3's inductor: the compiled training step's loss equals eager's to 1e-5 but the first layers' "
    "gradients do not (max |diff| 0.0178 against a largest eager gradient of 0.0015 with torch 2.3.1); "
    "strict, so a torch 2.3 that gets it right makes this fail and the mark gets removed"))
def test_train_step_compile_equals_fp32(shipped, step_reference):
    model, images, _ = shipped
    target, *ref = step_reference
    _close_step(_train_step(model, images[:8], target[:8], compile=True), ref, 1e-5, grad_tol=2e-3)


def test_bf16_training_attention_matches_fp32():
    """The bf16-with-gradients kernel (matmul-softmax-matmul) against fp32 SDPA, values and gradients."""
    from dspose_graph.models.transformer import attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 24, generator=gen) for _ in range(3))
    grad = torch.randn(2, 3, 40, 24, generator=gen)
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.nn.functional.scaled_dot_product_attention(*ref).backward(grad)
    low = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
    out = attention(*low)
    scale = 24 ** -0.5
    assert torch.equal(out, (low[0] @ low[1].transpose(-2, -1) * scale).softmax(-1) @ low[2])  # the math path
    out.backward(grad.to(torch.bfloat16))
    with torch.no_grad():
        torch.testing.assert_close(out.float(), torch.nn.functional.scaled_dot_product_attention(q, k, v),
                                   rtol=0, atol=0.05)
        assert torch.equal(attention(*low), torch.nn.functional.scaled_dot_product_attention(*low))  # fused
    for a, b in zip(low, ref):
        torch.testing.assert_close(a.grad.float(), b.grad, rtol=0, atol=0.05 * b.grad.abs().max().item())


def test_compiling_a_training_model_on_an_old_torch_warns(monkeypatch, caplog):
    """torch < 2.4 compiles the training step with wrong early gradients (the xfail above): compile_model says so
    when the module is in training mode, and stays quiet for inference and on newer torch."""
    from dspose_graph.models import runtime

    monkeypatch.setattr(runtime.torch, "compile", lambda module, **kw: module)  # the warning, not the compile
    net = torch.nn.Linear(2, 2)
    for version, training, warns in (("2.3.1+cu121", True, True), ("2.3.1", False, False), ("2.14.1", True, False)):
        monkeypatch.setattr(runtime.torch, "__version__", version)
        caplog.clear()
        net.train(training)
        with caplog.at_level("WARNING", logger=runtime.__name__):
            runtime.compile_model(net)
        assert ("train with torch >= 2.4" in caplog.text) is warns, (version, training)
