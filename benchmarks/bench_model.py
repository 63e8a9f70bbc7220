"""Model speed: DSPose-B vs TokenPose-B, dense vs sparse graph head, head share of a train step, peak memory.

Timings alternate between the configurations round by round (medians), so that load changes on a shared
machine hit all of them alike; peak RSS comes from one short process per configuration (build + one step).
The table prints ratios against TokenPose-B measured in the same run.

    python benchmarks/bench_model.py                    # batch 8, 2 threads, dspose_b vs tokenpose_b
    python benchmarks/bench_model.py --tiny             # dspose_t vs tokenpose_t (a quick smoke run)

Goals (issue 4): graph-head overhead <= 5 % of the train step; dense head >= 3x faster than sparse.
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

ROOT = Path(__file__).resolve().parents[1]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def _round_robin(fns: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call; configurations alternate so that load changes on a shared machine hit all."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: _median(v) for k, v in times.items()}


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
    parser.add_argument("--no-memory", action="store_true", help="skip the per-configuration peak-RSS processes")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="dense", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.backend, args.batch, args.threads)))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    size = "t" if args.tiny else "b"
    ref_name, dense_name, sparse_name = f"tokenpose_{size} (MLP head)", f"dspose_{size} dense", f"dspose_{size} sparse"
    tp, ds = _build(f"tokenpose_{size}", "dense"), _build(f"dspose_{size}", "dense")
    w, h = tp.input_size
    images, target = torch.randn(args.batch, 3, h, w), torch.rand(args.batch, tp.num_keypoints, h // 4, w // 4)
    fwd = _round_robin({ref_name: _forward_fn(tp, images), dense_name: _forward_fn(ds, images, "dense"),
                        sparse_name: _forward_fn(ds, images, "sparse")}, args.rounds, args.warmup)
    stp = _round_robin({ref_name: _step_fn(tp, images, target), dense_name: _step_fn(ds, images, target, "dense"),
                        sparse_name: _step_fn(ds, images, target, "sparse")}, args.rounds, args.warmup)
    tokens = torch.randn(args.batch, tp.num_keypoints, tp.encoder.out_dim, requires_grad=True)

    def head_fn(model, backend=None):
        def run():
            if backend:
                model.head.set_backend(backend)
            model.head(tokens).square().mean().backward()
        return run

    heads = {ref_name: head_fn(tp), dense_name: head_fn(ds, "dense"), sparse_name: head_fn(ds, "sparse")}
    head = _round_robin(heads, args.rounds * 10, args.warmup * 3)
    # Small ops pay OpenMP synchronisation; on an oversubscribed machine that dominates the head's time at
    # 2 threads, so the head is also timed on one thread.
    torch.set_num_threads(1)
    head1 = _round_robin(heads, args.rounds * 10, args.warmup * 3)
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
