"""Fast paths for running a model: reduced precision (autocast), channels-last memory format, torch.compile.

:func:`prepare_model` puts a model on its device in the requested form and returns a :class:`PreparedModel`
whose call runs it under the matching autocast and hands back float32 outputs; ``prepared.autocast()`` is the
same context for callers that run the module themselves (e.g. a training step).

========================  =====================================================================================
option                    what it does and costs
========================  =====================================================================================
``precision="fp32"``      float32 everywhere (the reference).
``precision="bf16"``      autocast to bfloat16 (CPU, and CUDA GPUs that support it); no loss scaling needed.
``precision="fp16"``      autocast to float16, CUDA only (CPU fp16 kernels are slow or missing); training
                          needs a ``GradScaler``.
``channels_last=True``    NHWC weights and inputs for the convolutional backbone (faster convolutions with
                          oneDNN/cuDNN, identical maths).
``compile=True``          ``torch.compile``; the first calls pay the compilation (tens of seconds on CPU). The
                          graph head must use its dense backend: the sparse backend's ``nonzero`` has a
                          data-dependent size that breaks the compiled graph, so compilation switches a sparse
                          head to dense (same parameters, tested equal).
``freeze=True``           with ``compile``: inductor's freezing for inference graphs (weights become constants:
                          BatchNorm folded into the convolutions, weight casts done once). Only for weights that
                          no longer change (Predictor, ``dspose predict``, evaluating a saved checkpoint); a
                          frozen graph keeps the weights it was compiled with, so evaluation during training
                          does not freeze.
========================  =====================================================================================

The feature-space similarities of the graph head stay float32 under every precision
(:func:`dspose_graph.graph.feature.cosine_similarity_matrix`), so the graph a fast path builds is fp32's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any, ContextManager, Iterator

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AUTO = "auto"
# CPU flags of native bfloat16 arithmetic (x86: AVX512-BF16 dot products, AMX tiles). Without them oneDNN
# emulates bf16 and autocast is several times slower than fp32 (measured 6x on an AVX2-only EPYC).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


# The vector extensions a figure's CPU is described by (flag -> name), in the order they are listed.
VECTOR_EXTENSIONS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX"}


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line's value of Linux ``/proc/cpuinfo`` (``None`` elsewhere or when absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    return set((_cpuinfo("flags") or "").split())


def cpu_description() -> str:
    """The CPU a figure was measured on: model, cores, vector extensions, e.g. ``"AMD EPYC, 2 cores, AVX2,
    AVX-512, AVX512-BF16, no AMX"``."""
    import os
    import platform

    flags = cpu_flags()
    extensions = [name for flag, name in VECTOR_EXTENSIONS.items() if flag in flags]
    if "amx_tile" not in flags:
        extensions.append("no AMX")
    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    return ", ".join([name, f"{os.cpu_count()} cores", *extensions])


@functools.lru_cache(maxsize=None)
def _bf16_speedup(repeats: int = 7) -> float:
    """fp32 time / bf16 time of a 3x3 convolution forward of the backbone's size (fastest of ``repeats`` each:
    other work on the machine only ever adds time). Measured once per process: training, its evaluator and the
    demo's time estimate then agree on the precision ``auto`` picks, and none pays the measurement again."""
    import time

    conv = nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 32, 24).contiguous(memory_format=torch.channels_last)
    times = {}
    with torch.no_grad():
        for name, ctx in (("fp32", contextlib.nullcontext), ("bf16", lambda: torch.autocast("cpu", torch.bfloat16))):
            samples = []
            for _ in range(repeats + 1):  # the first call pays oneDNN's kernel selection
                start = time.perf_counter()
                with ctx():
                    conv(x)
                samples.append(time.perf_counter() - start)
            times[name] = min(samples[1:])
    return times["fp32"] / max(times["bf16"], 1e-9)


def resolve_precision(precision: str, device: str | torch.device) -> tuple[str, str]:
    """``(precision, reason)``: ``precision`` itself, or for ``"auto"`` the fastest safe one on ``device``.

    ``auto`` picks fp32 on CUDA (official TokenPose trains in fp32; bf16 is an opt-in there) and, on a CPU, bf16
    only when the CPU has native bf16 instructions (:data:`BF16_CPU_FLAGS`) *and* a bf16 convolution measures
    faster than fp32 here; otherwise fp32. The reason says which and why, for the logs.
    """
    if precision != AUTO:
        autocast_dtype(precision, device)
        return precision, "as configured"
    device = torch.device(device)
    if device.type == "cuda":
        return "fp32", "auto on CUDA: fp32, official TokenPose's training precision"
    if device.type != "cpu":
        return "fp32", f"auto on {device.type}: fp32"
    native = sorted(set(BF16_CPU_FLAGS) & cpu_flags())
    if not native:
        return "fp32", "auto on CPU: fp32 (no native bf16 instructions: none of " + ", ".join(BF16_CPU_FLAGS) + ")"
    speedup = _bf16_speedup()
    if speedup <= 1.1:
        return "fp32", (f"auto on CPU: fp32 (CPU has {', '.join(native)} but a bf16 convolution measured only "
                        f"{speedup:.2f}x fp32 here)")
    return "bf16", f"auto on CPU: bf16 (CPU has {', '.join(native)}; a bf16 convolution measured {speedup:.2f}x fp32)"


def check_device(name: str, option: str = "--device") -> None:
    """Refuse a device name that torch does not know or that this machine lacks (``ValueError`` naming ``option``
    and the fix)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        hint = " ('gpu' is spelled 'cuda' in torch)" if str(name).lower().startswith("gpu") else ""
        raise ValueError(f"{option} {name!r} is not a torch device; use cpu, cuda or cuda:N{hint}") from None
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(f"{option} {name}: CUDA is not available here (no NVIDIA driver or GPU found; this torch "
                         f"{torch.__version__} is built for CUDA {torch.version.cuda}); use {option + ' ' if option.startswith('--') else ''}cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None`` for fp32).

    Raises ``ValueError`` for an unknown name, fp16 off CUDA, or bf16 on a GPU without bf16 support.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device, got {device} (use bf16 on CPU)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' is not supported by {torch.cuda.get_device_name(device)} (use fp16)")
    return PRECISIONS[precision]


def autocast_context(precision: str, device: str | torch.device) -> ContextManager[Any]:
    """A fresh autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _use_dense_head(model: nn.Module) -> None:
    head = getattr(model, "head", None)
    layers = getattr(head, "layers", None)
    if layers is not None and any(getattr(layer, "backend", "dense") == "sparse" for layer in layers):
        log.info("torch.compile: switching the graph head from the sparse to the dense backend "
                 "(nonzero has a data-dependent size that breaks the compiled graph; same parameters)")
        head.set_backend("dense")


@dataclass
class PreparedModel:
    """A model made ready for a fast path; call it on ``(B, 3, H, W)`` images to get float32 outputs.

    Attributes:
        module: the model to run (compiled, if asked: then ``original`` holds the uncompiled module).
        original: the uncompiled model, whose parameters ``module`` shares (for state dicts and checkpoints).
        device, precision, channels_last, compiled, frozen: the choices made.
    """

    module: nn.Module
    original: nn.Module
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    compiled: bool = False
    frozen: bool = False

    def autocast(self) -> ContextManager[Any]:
        """The autocast context to run ``module`` under (a new one per call)."""
        return autocast_context(self.precision, self.device)

    def prepare_input(self, images: Tensor) -> Tensor:
        """``images`` on the model's device in its memory format."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def __call__(self, images: Tensor, **kwargs: Any) -> Tensor:
        with self.autocast():
            out = self.module(self.prepare_input(images), **kwargs)
        return out.float() if isinstance(out, Tensor) else out


def prepare_model(model: nn.Module, device: str | torch.device = "cpu", precision: str = "fp32",
                  channels_last: bool = False, compile: bool = False,
                  compile_mode: str | None = None, freeze: bool = False) -> PreparedModel:
    """Move ``model`` to ``device`` in the requested form (in place) and return how to run it.

    Args:
        model: a DSPose/TokenPose model (any ``nn.Module`` taking NCHW images works).
        device: where it runs.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only); weights stay float32, autocast casts.
        channels_last: NHWC memory format for weights and inputs.
        compile: wrap with ``torch.compile`` (a sparse graph head is switched to dense first).
        compile_mode: ``torch.compile``'s ``mode`` (e.g. ``"max-autotune"``), default mode when ``None``.
        freeze: with ``compile``, freeze the weights into the compiled inference graph (see the module table);
            the weights must not change afterwards.

    Raises:
        ValueError: unknown precision, fp16 off CUDA, bf16 on a GPU without it, ``freeze`` without
            ``compile`` or together with ``compile_mode``.
    """
    device = torch.device(device)
    autocast_dtype(precision, device)
    if freeze and not compile:
        raise ValueError("freeze=True needs compile=True (freezing is a torch.compile pass)")
    if freeze and compile_mode is not None:
        raise ValueError(f"freeze=True cannot be combined with compile_mode={compile_mode!r} "
                         "(torch.compile takes a mode or inductor options, not both)")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    module = model
    if compile:
        module = compile_model(model, freeze=freeze, mode=compile_mode)
    return PreparedModel(module=module, original=model, device=device, precision=precision,
                         channels_last=channels_last, compiled=compile, frozen=freeze)


def _torch_older_than(major: int, minor: int) -> bool:
    return tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < (major, minor)


def compile_model(module: nn.Module, model: nn.Module | None = None, *, freeze: bool = False,
                  mode: str | None = None) -> nn.Module:
    """``torch.compile(module)`` after switching ``model``'s graph head to its dense backend (``model`` defaults
    to ``module``; give it when ``module`` wraps the model, e.g. in ``DistributedDataParallel``)."""
    _use_dense_head(module if model is None else model)
    if module.training and _torch_older_than(2, 4):
        log.warning("torch %s: its inductor compiles the training step with gradients that differ from eager "
                    "(first layers, measured on torch 2.3.1); train with torch >= 2.4 or without compile",
                    torch.__version__)
    return torch.compile(module, options={"freezing": True}) if freeze else torch.compile(module, mode=mode)


@contextlib.contextmanager
def channels_last_weights(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside the block, ``model``'s 4-d weights and buffers are NHWC; after it, each holds its own tensor again.

    For running a model that is being trained in another layout (evaluation with ``eval.channels_last`` during
    training): the optimiser's moments keep the layout of the parameters they were created for, and CUDA's fused
    Adam refuses parameters whose layout differs from them. The NHWC copies cost one weight copy per block.
    """
    if not enabled:
        yield
        return
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]
    saved = [t.data for t in tensors]
    try:
        for t in tensors:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
        yield
    finally:
        for t, data in zip(tensors, saved):
            t.data = data


__all__ = ["PRECISIONS", "AUTO", "cpu_flags", "cpu_description", "resolve_precision", "channels_last_weights", "compile_model", "autocast_dtype",
           "autocast_context", "PreparedModel", "prepare_model"]
