"""Batched DARK decoding vs the straightforward per-joint loop, on (32, 17, 64, 48) heatmaps.

The reference is how DARK is usually written (one heatmap at a time: ``cv2.GaussianBlur``, log, Taylor step
with a 2x2 ``numpy.linalg.inv``). Both run on the same network-like heatmaps in this process, with the blur
border of one codec (``--codec``, default the default codec: zero padding for ``tokenpose``, reflect-101 for
``hrnet`` and ``udp``); the table gives each one's best-of-N time and the ratio (goal: batched >= 20x faster).
Exits 1 when the two disagree by 1e-3 px or more.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dspose_graph.data.codec import CODECS, DEFAULT_CODEC
from dspose_graph.eval.decode import dark_reference

GOAL = 20.0


def make_heatmaps(b: int, k: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = rng.uniform([0, 0], [w, h], size=(b, k, 2))
    ys, xs = np.mgrid[0:h, 0:w]
    d2 = (xs - pts[..., 0, None, None]) ** 2 + (ys - pts[..., 1, None, None]) ** 2
    hm = np.exp(-d2 / 8.0) * rng.uniform(0.3, 1.0, size=(b, k, 1, 1))
    return (hm + rng.normal(0, 0.02, size=hm.shape)).astype(np.float32)


def best_times(fns, repeat: int) -> list[float]:
    """Best-of-``repeat`` time of each function, run interleaved so that load on a shared machine hits all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_dark", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[32, 17, 64, 48], metavar=("B", "K", "H", "W"))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = a fair single-core comparison)")
    parser.add_argument("--codec", default=DEFAULT_CODEC, choices=sorted(CODECS),
                        help=f"whose DARK blur border both sides use (default {DEFAULT_CODEC})")
    args = parser.parse_args(argv)
    codec = CODECS[args.codec]
    torch.set_num_threads(args.threads)
    hm = make_heatmaps(*args.shape)
    hm_t = torch.from_numpy(hm)

    ref = dark_reference(hm, border=codec.blur_border)
    ours, _ = codec.decode(hm_t)
    max_diff = float(np.abs(ours.numpy() - ref).max())

    t_loop, t_torch, t_numpy = best_times(
        [lambda: dark_reference(hm, border=codec.blur_border), lambda: codec.decode(hm_t), lambda: codec.decode(hm)],
        args.repeat)
    rows = [
        ("per-joint loop (reference)", t_loop, 1.0),
        ("batched, torch input", t_torch, t_loop / t_torch),
        ("batched, numpy input", t_numpy, t_loop / t_numpy),
    ]
    print(f"DARK decoding of {tuple(args.shape)} heatmaps, codec {codec.name} ({codec.blur_border} border), "
          f"best of {args.repeat}, torch threads {args.threads}")
    print(f"{'method':<28} {'ms':>9} {'speed-up':>9}")
    for name, t, ratio in rows:
        print(f"{name:<28} {1e3 * t:9.2f} {ratio:8.1f}x")
    print(f"max |batched - loop| = {max_diff:.2e} px; goal >= {GOAL:.0f}x: "
          f"{'met' if min(r for _, _, r in rows[1:]) >= GOAL else 'NOT met'}")
    return 0 if max_diff < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
