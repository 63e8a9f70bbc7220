"""Synthetic dataset generation speed against the floor cost of writing any image dataset.

The reference, measured in the same run, is what every image dataset writer pays at least: JPEG-encode a
noisy image of the same size and write it to disk. Our rows are the whole generator for one image
(body sampling, projection, texture, painting, visibility, annotation; 1 person and 1-3 persons) and a
full :func:`generate_dataset` run (images + json, atomic rename). The table gives milliseconds per image,
the ratio to the reference, and the projected time for 1,000 images (goal: well under a minute).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from dspose_graph.data.synthetic import _encode_image, generate_dataset, generate_image

GOAL_SECONDS_PER_1000 = 60.0


def _best_ms(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(r * n + i)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_synth", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="192x256", help="image size WxH (default 192x256)")
    parser.add_argument("-n", type=int, default=50, help="images per timing (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings (default 3)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)

        def reference(i: int) -> None:
            (folder / f"ref{i}.jpg").write_bytes(_encode_image(noise))

        def one(i: int) -> None:
            generate_image(np.random.default_rng([0, 0, i]), (w, h), 1)

        def several(i: int) -> None:
            generate_image(np.random.default_rng([0, 0, i]), (w, h), (1, 3))

        def dataset(i: int) -> None:
            generate_dataset(folder / f"ds{i}", args.n, 0, image_size=(w, h), seed=i)

        ref = _best_ms(reference, args.n, args.repeats)
        rows = [("reference: JPEG encode + write", ref), ("generate_image, 1 person", _best_ms(one, args.n, args.repeats)),
                ("generate_image, 1-3 persons", _best_ms(several, args.n, args.repeats)),
                ("generate_dataset (per image)", _best_ms(dataset, 1, args.repeats) / args.n)]
    print(f"synthetic generation at {w}x{h}, best of {args.repeats} x {args.n} images")
    print(f"{'row':34s} {'ms/image':>9s} {'x reference':>12s} {'s per 1000':>11s}")
    for name, ms in rows:
        print(f"{name:34s} {ms:9.2f} {ms / ref:12.1f} {ms:11.1f}")
    per_1000 = rows[-1][1]
    verdict = "meets" if per_1000 < GOAL_SECONDS_PER_1000 else "MISSES"
    print(f"goal: 1,000 images in < {GOAL_SECONDS_PER_1000:.0f} s -> {per_1000:.1f} s ({verdict} the goal)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
