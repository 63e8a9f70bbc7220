"""GPU training speed of DSPose-B at batch 32: fp32, fp16 + GradScaler, bf16, each eager and compiled; peak
memory; and 100-step loss curves fp16 vs fp32 on generated people. Without CUDA it says so and exits 0.

Speed runs on random images already on the GPU (the model's cost, not the loader's), with the CUDA settings
the trainer is to use: ``cudnn.benchmark``, TF32 matmuls/convolutions for fp32, fused Adam, channels_last.
Times are CUDA-synchronised medians over ``--steps`` steps after ``--warmup`` (compilation is in the warm-up
and printed apart).

    python benchmarks/bench_gpu.py                      # all paths + loss curves
    python benchmarks/bench_gpu.py --no-compile --no-curve
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PATHS = {"fp32": "fp32", "fp16+GradScaler": "fp16", "bf16": "bf16"}


def _setup_cuda() -> None:
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _trainer(model, precision: str, compile: bool, device: torch.device):
    """One training step closure (loss returned as a tensor: no host wait inside the step)."""
    from dspose_graph.models.runtime import prepare_model
    from dspose_graph.train.trainer import heatmap_mse_loss

    prepared = prepare_model(model, device, precision=precision, channels_last=True, compile=compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def step(images, target, weight):
        with prepared.autocast():
            pred = prepared.module(prepared.prepare_input(images))
        loss = heatmap_mse_loss(pred.float(), target, weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()
    return step


def speed(base, batch: int, steps: int, warmup: int, compile: bool, device: torch.device) -> None:
    w, h = base.input_size
    k = base.num_keypoints
    images = torch.randn(batch, 3, h, w, device=device)
    target, weight = torch.rand(batch, k, h // 4, w // 4, device=device), torch.ones(batch, k, device=device)
    print(f"DSPose-B training on {torch.cuda.get_device_name(device)}, batch {batch}, channels_last, fused Adam, "
          f"cudnn.benchmark, TF32; median of {steps} steps after {warmup} warm-up")
    print(f"{'path':<26}{'images/s':>10}{'x fp32':>8}{'step ms':>9}{'peak GiB':>10}{'warm-up s':>11}")
    rates: dict[str, float] = {}
    for compiled in (False, True) if compile else (False,):
        for name, precision in PATHS.items():
            label = name + ("+compile" if compiled else "")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            step = _trainer(copy.deepcopy(base), precision, compiled, device)
            t0 = time.perf_counter()
            for _ in range(warmup):
                step(images, target, weight)
            torch.cuda.synchronize(device)
            warm = time.perf_counter() - t0
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                step(images, target, weight)
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            rate = batch / float(np.median(times))
            rates[label] = rate
            print(f"{label:<26}{rate:>10.1f}{rate / rates['fp32']:>8.2f}{1e3 * batch / rate:>9.1f}"
                  f"{torch.cuda.max_memory_allocated(device) / 2**30:>10.2f}{warm:>11.1f}")


def curves(base, batch: int, steps: int, device: torch.device) -> None:
    from torch.utils.data import DataLoader

    from dspose_graph.data.coco import CocoKeypointDataset
    from dspose_graph.data.synthetic import generate_dataset

    with tempfile.TemporaryDirectory(prefix="dspose_bench_gpu_") as tmp:
        paths = generate_dataset(Path(tmp) / "synth", num_train=steps * batch // 4, num_val=1,
                                 image_size=tuple(base.input_size), seed=5)
        data = CocoKeypointDataset(paths["train_json"], paths["train_images"], input_size=base.input_size,
                                   heatmap_size=base.heatmap_size, train=True, sigma=2.0, seed=0)
        losses = {}
        for name in ("fp32", "fp16+GradScaler"):
            torch.manual_seed(0)
            step = _trainer(copy.deepcopy(base), PATHS[name], False, device)
            loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=4,
                                pin_memory=True, generator=torch.Generator().manual_seed(0))
            got: list[torch.Tensor] = []
            while len(got) < steps:
                for b in loader:
                    moved = [b[key].to(device, non_blocking=True) for key in ("image", "heatmap", "target_weight")]
                    got.append(step(*moved))
                    if len(got) == steps:
                        break
            losses[name] = torch.stack(got).float().cpu().numpy()
    window = max(steps // 4, 1)
    print(f"loss curves, {steps} steps, batch {batch}, generated people, same seed; "
          f"mean loss per {window} steps (x 1e3)")
    for name, curve in losses.items():
        print(f"{name:<18}" + "".join(f"{1e3 * curve[a:a + window].mean():>10.4f}" for a in range(0, steps, window)))
    gap = np.abs(losses["fp16+GradScaler"][-window:].mean() - losses["fp32"][-window:].mean())
    print(f"last-window |fp16 - fp32| = {1e3 * gap:.4f}e-3 (fp32 mean {1e3 * losses['fp32'][-window:].mean():.4f}e-3)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--curve-steps", type=int, default=100)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-curve", dest="curve", action="store_false")
    parser.add_argument("--model", default="dspose_b")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device is available here; nothing measured (run it on a machine with a GPU)")
        return 0
    from dspose_graph.models import create_model

    device = torch.device("cuda", torch.cuda.current_device())
    _setup_cuda()
    torch.manual_seed(0)
    base = create_model(args.model)
    speed(base, args.batch, args.steps, args.warmup, args.compile, device)
    if args.curve:
        curves(base, args.batch, args.curve_steps, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
