"""Model speed: DSPose-B vs TokenPose-B, dense vs sparse graph head, head share of a train step, peak memory.

Each configuration runs in its own subprocess (clean peak RSS, no allocator carry-over) with the same batch,
threads and seed; the table prints ratios against TokenPose-B measured in the same run.

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

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def worker(preset: str, backend: str, batch: int, threads: int, repeats: int, warmup: int) -> dict:
    import torch

    from dspose_graph.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kwargs = {"backend": backend} if "dspose" in preset else {}
    model = create_model(preset, **kwargs)
    w, h = model.input_size
    images = torch.randn(batch, 3, h, w)
    target = torch.rand(batch, model.num_keypoints, h // 4, w // 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def forward():
        with torch.no_grad():
            model(images)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(images), target).backward()
        opt.step()

    model.eval()
    fwd = _time(forward, repeats, warmup)
    model.train()
    stp = _time(step, repeats, warmup)
    tokens = torch.randn(batch, model.num_keypoints, model.encoder.out_dim, requires_grad=True)

    def head_step():
        model.head(tokens).square().mean().backward()

    head = _time(head_step, repeats * 5, warmup)
    return {"forward_s": fwd, "step_s": stp, "head_fwd_bwd_s": head,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _spawn(args: argparse.Namespace, preset: str, backend: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", preset, "--backend", backend,
           "--batch", str(args.batch), "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_model", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="dspose_t/tokenpose_t instead of the B presets")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="dense", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.backend, args.batch, args.threads, args.repeats, args.warmup)))
        return 0

    size = "t" if args.tiny else "b"
    runs = {
        f"tokenpose_{size} (MLP head)": _spawn(args, f"tokenpose_{size}", "dense"),
        f"dspose_{size} dense head": _spawn(args, f"dspose_{size}", "dense"),
        f"dspose_{size} sparse head": _spawn(args, f"dspose_{size}", "sparse"),
    }
    ref_name = f"tokenpose_{size} (MLP head)"
    ref = runs[ref_name]
    print(f"batch {args.batch}, {args.threads} threads, best of {args.repeats}; reference = {ref_name}")
    print(f"{'model':<28}{'forward s':>10}{'x ref':>7}{'step s':>9}{'x ref':>7}{'head f+b ms':>13}"
          f"{'head/step':>10}{'peak RSS MB':>13}")
    for name, r in runs.items():
        print(f"{name:<28}{r['forward_s']:>10.3f}{r['forward_s'] / ref['forward_s']:>7.2f}{r['step_s']:>9.3f}"
              f"{r['step_s'] / ref['step_s']:>7.2f}{r['head_fwd_bwd_s'] * 1e3:>13.2f}"
              f"{r['head_fwd_bwd_s'] / r['step_s']:>9.1%}{r['peak_rss_mb']:>13.0f}")
    dense, sparse = runs[f"dspose_{size} dense head"], runs[f"dspose_{size} sparse head"]
    overhead = (dense["head_fwd_bwd_s"] - ref["head_fwd_bwd_s"]) / dense["step_s"]
    speedup = sparse["head_fwd_bwd_s"] / dense["head_fwd_bwd_s"]
    print(f"graph head share of the DSPose train step: {dense['head_fwd_bwd_s'] / dense['step_s']:.1%} "
          f"(extra over the MLP head: {overhead:+.1%}; goal <= 5%)")
    print(f"whole-step ratio DSPose/TokenPose: {dense['step_s'] / ref['step_s']:.3f} (noisy on a shared machine)")
    print(f"dense head vs sparse head (forward+backward): {speedup:.1f}x faster (goal >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
