"""Model speed: the fast paths (bf16, channels-last, torch.compile) against fp32 eager of the same model, and
(``--arch``) DSPose-B vs TokenPose-B, dense vs sparse graph head, head share of a train step, peak memory.

Timings alternate between the configurations round by round (medians), so that load changes on a shared
machine hit all of them alike; peak RSS comes from one short process per configuration (build + one step).
Each table prints ratios against its reference measured in the same run.

    python benchmarks/bench_model.py                    # fast paths of dspose_b, batch 8, 2 threads
    python benchmarks/bench_model.py --no-compile       # without the compiled paths (minutes of compiling)
    python benchmarks/bench_model.py --arch [--tiny]    # dspose_b vs tokenpose_b (dspose_t vs tokenpose_t)
    python benchmarks/bench_model.py --kernels          # fp32 vs bf16 of the model's convolutions and attention

Goals: fast paths: inference >= 2.5x (bf16 + channels_last + compile), train step >= 2.0x (bf16 +
channels_last). Architecture: graph-head overhead <= 5 % of the train step; dense head >= 3x faster than
sparse. Accuracy of the fast paths: ``benchmarks/bench_precision.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from timing import round_robin

ROOT = Path(__file__).resolve().parents[1]


def _build(preset: str, backend: str):
    import torch

    from dspose_graph.models import create_model

    torch.manual_seed(0)
    return create_model(preset, **({"backend": backend} if preset.startswith("dspose") else {}))


def _step_fn(model, images, target, backend: str | None = None):
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def step():
        if backend:
            model.head.set_backend(backend)
        model.train()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(images), target).backward()
        opt.step()
    return step


def _forward_fn(model, images, backend: str | None = None):
    import torch

    def forward():
        if backend:
            model.head.set_backend(backend)
        model.eval()
        with torch.no_grad():
            model(images)
    return forward


# name -> prepare_model options; the compiled paths are skipped with --no-compile. Inference compiles as
# Predictor and checkpoint evaluation do (weights frozen into the graph); training compiles without freezing.
PATHS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
    "fp32+compile": {"compile": True},
    "bf16+channels_last+compile": {"precision": "bf16", "channels_last": True, "compile": True},
}
TRAIN_PATHS = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")


def _fast_forward(prepared, images):
    import torch

    def forward():
        prepared.module.eval()
        with torch.no_grad():
            prepared(images)
    return forward


def _fast_step(prepared, images, target):
    import torch

    opt = torch.optim.SGD(prepared.original.parameters(), lr=1e-6)
    x = prepared.prepare_input(images)

    def step():
        prepared.module.train()
        opt.zero_grad(set_to_none=True)
        with prepared.autocast():
            pred = prepared.module(x)
        torch.nn.functional.mse_loss(pred.float(), target).backward()
        opt.step()
    return step


def _first_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fast_paths(args: argparse.Namespace) -> None:
    """Forward and train-step time of each fast path against fp32 eager of the same weights (one run)."""
    import copy

    import torch

    from dspose_graph.models.runtime import prepare_model

    preset = "dspose_t" if args.tiny else "dspose_b"
    base = _build(preset, "dense")
    w, h = base.input_size
    images, target = torch.randn(args.batch, 3, h, w), torch.rand(args.batch, base.num_keypoints, h // 4, w // 4)
    names = [n for n in PATHS if args.compile or not PATHS[n].get("compile")]
    fwd_fns, step_fns, first, first_step = {}, {}, {}, {}
    for name in names:
        options = {**PATHS[name], "freeze": bool(PATHS[name].get("compile"))}
        fwd_fns[name] = _fast_forward(prepare_model(copy.deepcopy(base), **options), images)
        first[name] = _first_call(fwd_fns[name])  # compiles the compiled paths
    for name in (n for n in TRAIN_PATHS if n in names):
        step_fns[name] = _fast_step(prepare_model(copy.deepcopy(base), **PATHS[name]), images, target)
        first_step[name] = _first_call(step_fns[name])
    fwd = round_robin(fwd_fns, args.rounds, args.warmup)
    stp = round_robin(step_fns, args.rounds, args.warmup)
    print(f"fast paths of {preset}: batch {args.batch}, {args.threads} threads, median of {args.rounds} interleaved "
          f"rounds, reference = fp32 eager (shared machine: absolute times inflated, ratios comparable)")
    print(f"{'path':<28}{'forward s':>10}{'x fp32':>8}{'compile s':>11}{'step s':>9}{'x fp32':>8}{'compile s':>11}")
    for name in names:
        compiled = PATHS[name].get("compile")
        step = (f"{stp[name]:>9.3f}{stp['fp32'] / stp[name]:>8.2f}"
                + (f"{first_step[name] - stp[name]:>11.1f}" if compiled else f"{'-':>11}")) if name in stp else ""
        compile_s = f"{first[name] - fwd[name]:>11.1f}" if compiled else f"{'-':>11}"
        print(f"{name:<28}{fwd[name]:>10.3f}{fwd['fp32'] / fwd[name]:>8.2f}{compile_s}{step}")
    best = "bf16+channels_last+compile" if args.compile else "bf16+channels_last"
    print(f"inference {best}: {fwd['fp32'] / fwd[best]:.2f}x (goal >= 2.5x with compile); train step "
          f"bf16+channels_last: {stp['fp32'] / stp['bf16+channels_last']:.2f}x (goal >= 2.0x); compile times are "
          f"the first call less a timed one (inductor's on-disk cache makes reruns faster)")


def kernels(args: argparse.Namespace) -> None:
    """What bf16 can buy on this CPU: 3x3 convolutions and attention (the model's shapes) in fp32 and bf16,
    interleaved call by call (medians, as the fast-path table).

    The fast paths cannot beat the ratio of the kernels they run: where the convolutions already run near the
    machine's peak in both precisions, the bf16/fp32 ratio of the whole model is bounded by theirs.
    """
    import torch
    import torch.nn.functional as F

    from dspose_graph.models.transformer import attention

    print(f"kernels, batch {args.batch}, {args.threads} threads (DSPose-B shapes: HRNet-W32 3x3 convolutions, "
          f"NHWC; attention over 273 tokens, 8 heads of 24 channels)")
    print(f"{'kernel':<44}{'fp32 ms':>9}{'bf16 ms':>9}{'x':>7}{'fp32 GFLOP/s':>14}{'bf16 GFLOP/s':>14}")
    for channels, (h, w) in ((32, (64, 48)), (64, (32, 24)), (128, (16, 12))):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(args.batch, channels, h, w).contiguous(memory_format=torch.channels_last)
        flops = 2 * args.batch * h * w * channels * channels * 9
        def run(low: bool) -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
                conv(x)
        ms = round_robin({None: lambda: run(False), torch.bfloat16: lambda: run(True)}, 20, 3)
        print(f"{f'conv 3x3 {channels}->{channels} at {h}x{w}':<44}{1e3 * ms[None]:>9.2f}"
              f"{1e3 * ms[torch.bfloat16]:>9.2f}{ms[None] / ms[torch.bfloat16]:>7.2f}{flops / ms[None] / 1e9:>14.0f}"
              f"{flops / ms[torch.bfloat16] / 1e9:>14.0f}")
    shape = (args.batch, 8, 273, 24)
    for name, grad in (("attention forward", False), ("attention forward + backward", True)):
        fns = {}
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=grad) for _ in range(3))
            g = torch.randn(shape, dtype=dtype)
            for kernel, fn in (("fused", F.scaled_dot_product_attention), ("as the model runs it", attention)):
                def attend(fn=fn, q=q, k=k, v=v, g=g) -> None:
                    with torch.set_grad_enabled(grad):
                        out = fn(q, k, v)
                        if grad:
                            out.backward(g)
                fns[dtype, kernel] = attend
        ms = round_robin(fns, 10, 3)
        for kernel in ("fused", "as the model runs it"):
            print(f"{f'{name}, {kernel}':<44}{1e3 * ms[torch.float32, kernel]:>9.2f}"
                  f"{1e3 * ms[torch.bfloat16, kernel]:>9.2f}"
                  f"{ms[torch.float32, kernel] / ms[torch.bfloat16, kernel]:>7.2f}")


def memory_worker(preset: str, backend: str, batch: int, threads: int) -> dict:
    """Peak RSS of building ``preset`` and running one train step (own process)."""
    import torch

    torch.set_num_threads(threads)
    model = _build(preset, backend)
    w, h = model.input_size
    images, target = torch.randn(batch, 3, h, w), torch.rand(batch, model.num_keypoints, h // 4, w // 4)
    _step_fn(model, images, target)()
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _memory(args: argparse.Namespace, preset: str, backend: str) -> float:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", preset, "--backend", backend,
           "--batch", str(args.batch), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_model", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="dspose_t/tokenpose_t instead of the B presets")
    parser.add_argument("--arch", action="store_true", help="DSPose vs TokenPose, dense vs sparse head")
    parser.add_argument("--kernels", action="store_true", help="fp32 vs bf16 of the convolutions and attention alone")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile paths")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-configuration peak-RSS processes")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="dense", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.backend, args.batch, args.threads)))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    if args.kernels:
        kernels(args)
        return 0
    if not args.arch:
        fast_paths(args)
        return 0
    size = "t" if args.tiny else "b"
    ref_name, dense_name, sparse_name = f"tokenpose_{size} (MLP head)", f"dspose_{size} dense", f"dspose_{size} sparse"
    tp, ds = _build(f"tokenpose_{size}", "dense"), _build(f"dspose_{size}", "dense")
    w, h = tp.input_size
    images, target = torch.randn(args.batch, 3, h, w), torch.rand(args.batch, tp.num_keypoints, h // 4, w // 4)
    fwd = round_robin({ref_name: _forward_fn(tp, images), dense_name: _forward_fn(ds, images, "dense"),
                        sparse_name: _forward_fn(ds, images, "sparse")}, args.rounds, args.warmup)
    stp = round_robin({ref_name: _step_fn(tp, images, target), dense_name: _step_fn(ds, images, target, "dense"),
                        sparse_name: _step_fn(ds, images, target, "sparse")}, args.rounds, args.warmup)
    tokens = torch.randn(args.batch, tp.num_keypoints, tp.encoder.out_dim, requires_grad=True)

    def head_fn(model, backend=None):
        def run():
            if backend:
                model.head.set_backend(backend)
            model.head(tokens).square().mean().backward()
        return run

    heads = {ref_name: head_fn(tp), dense_name: head_fn(ds, "dense"), sparse_name: head_fn(ds, "sparse")}
    head = round_robin(heads, args.rounds * 10, args.warmup * 3)
    # Small ops pay OpenMP synchronisation; on an oversubscribed machine that dominates the head's time at
    # 2 threads, so the head is also timed on one thread.
    torch.set_num_threads(1)
    head1 = round_robin(heads, args.rounds * 10, args.warmup * 3)
    torch.set_num_threads(args.threads)
    ds.head.set_backend("dense")
    mem = {} if args.no_memory else {
        ref_name: _memory(args, f"tokenpose_{size}", "dense"), dense_name: _memory(args, f"dspose_{size}", "dense"),
        sparse_name: _memory(args, f"dspose_{size}", "sparse")}

    print(f"batch {args.batch}, {args.threads} threads, median of {args.rounds} interleaved rounds; "
          f"reference = {ref_name}")
    print(f"{'model':<26}{'forward s':>10}{'x ref':>7}{'step s':>9}{'x ref':>7}{'head f+b ms':>13}"
          f"{'head/step':>10}{'1 thread ms':>12}{'peak RSS MB':>13}")
    for name in (ref_name, dense_name, sparse_name):
        print(f"{name:<26}{fwd[name]:>10.3f}{fwd[name] / fwd[ref_name]:>7.2f}{stp[name]:>9.3f}"
              f"{stp[name] / stp[ref_name]:>7.2f}{head[name] * 1e3:>13.2f}{head[name] / stp[name]:>10.1%}"
              f"{head1[name] * 1e3:>12.2f}{mem.get(name, float('nan')):>13.0f}")
    extra = (head[dense_name] - head[ref_name]) / stp[dense_name]
    print(f"graph head share of the DSPose train step: {head[dense_name] / stp[dense_name]:.1%} "
          f"(extra over the MLP head: {extra:+.1%} of the step; goal <= 5%)")
    print(f"whole train step DSPose/TokenPose: {stp[dense_name] / stp[ref_name]:.3f}")
    print(f"dense vs sparse graph head (forward+backward): {head[sparse_name] / head[dense_name]:.1f}x faster at "
          f"{args.threads} threads, {head1[sparse_name] / head1[dense_name]:.1f}x on 1 thread (goal >= 3x); "
          f"whole step: {stp[sparse_name] / stp[dense_name]:.2f}x")
    print(f"graph head extra over the MLP head on 1 thread: {(head1[dense_name] - head1[ref_name]) * 1e3:.1f} ms "
          f"= {(head1[dense_name] - head1[ref_name]) / stp[dense_name]:+.1%} of the {args.threads}-thread step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
