"""Accuracy of the fast paths: trained checkpoints in fp32 vs bf16 (and fp16 on CUDA), and AMP loss curves.

Accuracy guard: each checkpoint predicts its held-out set (flip test + DARK) in fp32 eager and in each fast
path; the table gives the largest keypoint displacement (image pixels), the change of OKS AP and of PCK@0.2.
Checkpoints: the shipped synthetic ``dspose_t`` on freshly generated people (a seed its training never saw),
and the demo's LSPET model (``runs/demo/train/best.pt`` or ``last.pt`` on the held-out set named in its
``config.yaml``) when ``runs/demo`` exists.

Loss curves (``--curve``): ``--steps`` training steps of ``dspose_t`` (from random weights, Adam, batch 8) on
generated people, in fp32 with two seeds and in bf16 + channels_last with the first; the bf16 curve should stay
within the spread of the two fp32 seeds: the mean per-step |bf16 - fp32| of the same seed <= the mean per-step
|fp32 seed 1 - fp32 seed 0|, and the largest per-window difference <= the largest seed-to-seed one (the
precision changes the curve less than the seed does). Each window is printed too.

    python benchmarks/bench_precision.py                 # accuracy guard (about a minute per checkpoint)
    python benchmarks/bench_precision.py --curve         # plus 3 x 200 training steps
    python benchmarks/bench_precision.py --compile       # plus the torch.compile paths

Goal: |dAP| <= 0.1 and |dPCK| <= 0.2 for bf16.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dspose_graph.data.base import TopDownDataset
from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.data.synthetic import generate_dataset
from dspose_graph.models import create_model
from dspose_graph.models.runtime import prepare_model
from dspose_graph.models.checkpoint import inference_spec, load_model
from dspose_graph.train.evaluate import compute_metrics, oks_sigmas, predict_dataset
from dspose_graph.train.trainer import heatmap_mse_loss
from dspose_graph.weights import shipped_path

GOAL_AP, GOAL_PCK = 0.1, 0.2


def _paths(device: torch.device, compile: bool) -> dict[str, dict]:
    paths = {"fp32": {}, "bf16": {"precision": "bf16"},
             "bf16+channels_last": {"precision": "bf16", "channels_last": True}}
    if compile:
        # Compiled as Predictor and checkpoint evaluation compile: weights frozen into the graph.
        paths["fp32+compile"] = {"compile": True, "freeze": True}
        paths["bf16+channels_last+compile"] = {"precision": "bf16", "channels_last": True, "compile": True,
                                               "freeze": True}
    if device.type == "cuda":
        paths["fp16"] = {"precision": "fp16"}
    return paths


def _val_set(model: nn.Module, ann_file: Path, image_dir: Path, codec: str) -> TopDownDataset:
    return CocoKeypointDataset(ann_file, image_dir, input_size=model.input_size, heatmap_size=model.heatmap_size,
                               codec=codec)


def guard(name: str, weights: Path, ann_file: Path, image_dir: Path, device: torch.device,
          compile: bool = False) -> None:
    """Print displacement, dAP and dPCK@0.2 of every fast path against fp32 for one checkpoint."""
    from pycocotools.coco import COCO

    model, ckpt = load_model(weights)
    codec = inference_spec(ckpt, model).codec
    dataset = _val_set(model, ann_file, image_dir, codec)
    coco_gt, sigmas = COCO(str(ann_file)), oks_sigmas(model.schema)
    results = {}
    for path, options in _paths(device, compile).items():
        copied = copy.deepcopy(model)
        runner = prepare_model(copied, device, **options)
        pred = predict_dataset(copied, dataset, device=device, codec=codec, forward=runner)
        results[path] = (pred, compute_metrics(pred, coco_gt=coco_gt, sigmas=sigmas))
    ref_pred, ref = results["fp32"]
    print(f"{name}: {weights} on {len(dataset)} held-out persons ({ann_file}); fp32 AP {ref['AP']:.4f}, "
          f"PCK@0.2 {ref['PCK@0.2']:.2f}")
    print(f"{'path':<22}{'max kp move px':>16}{'mean move px':>14}{'AP':>9}{'dAP':>9}{'PCK@0.2':>9}{'dPCK':>8}")
    for path, (pred, metrics) in results.items():
        move = np.linalg.norm(pred["coords"] - ref_pred["coords"], axis=-1)
        d_ap, d_pck = metrics["AP"] - ref["AP"], metrics["PCK@0.2"] - ref["PCK@0.2"]
        print(f"{path:<22}{move.max():>16.3f}{move.mean():>14.4f}{metrics['AP']:>9.4f}{d_ap:>+9.4f}"
              f"{metrics['PCK@0.2']:>9.2f}{d_pck:>+8.2f}")
        if path.startswith("bf16") or path == "fp16":
            ok = abs(d_ap) <= GOAL_AP and abs(d_pck) <= GOAL_PCK
            print(f"  goal |dAP| <= {GOAL_AP}, |dPCK| <= {GOAL_PCK}: {'met' if ok else 'NOT met'}")


def loss_curve(data_root: Path, options: dict, seed: int, steps: int, batch: int) -> np.ndarray:
    """Per-step training loss of a fresh dspose_t on the generated people."""
    torch.manual_seed(seed)
    model = create_model("dspose_t")
    prepared = prepare_model(model, "cpu", **options)
    dataset = CocoKeypointDataset(data_root / "annotations" / "person_keypoints_train.json",
                                  data_root / "images" / "train", input_size=model.input_size,
                                  heatmap_size=model.heatmap_size, train=True, sigma=3.0, seed=seed)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses: list[float] = []
    model.train()
    while len(losses) < steps:
        for batch_data in loader:
            with prepared.autocast():
                pred = prepared.module(prepared.prepare_input(batch_data["image"]))
            loss = heatmap_mse_loss(pred.float(), batch_data["heatmap"], batch_data["target_weight"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    return np.asarray(losses)


def curves(work: Path, steps: int, batch: int) -> None:
    paths = generate_dataset(work / "curve", num_train=steps * batch // 4, num_val=1, image_size=(96, 128), seed=11)
    root = paths["train_json"].parents[1]
    runs = {"fp32 seed 0": ({}, 0), "fp32 seed 1": ({}, 1),
            "bf16+channels_last seed 0": ({"precision": "bf16", "channels_last": True}, 0)}
    got = {name: loss_curve(root, options, seed, steps, batch) for name, (options, seed) in runs.items()}
    window = max(steps // 4, 1)
    edges = list(range(0, steps, window))
    print(f"loss curves: dspose_t from random weights, Adam 2e-3, batch {batch}, {steps} steps on generated "
          f"people; mean loss per window of {window} steps (x 1e3)")
    print(f"{'run':<28}" + "".join(f"{f'{a}-{min(a + window, steps)}':>12}" for a in edges))
    means = {name: [got[name][a:a + window].mean() for a in edges] for name in got}
    for name, row in means.items():
        print(f"{name:<28}" + "".join(f"{1e3 * v:>12.4f}" for v in row))
    amp = np.abs(np.subtract(means["bf16+channels_last seed 0"], means["fp32 seed 0"]))
    seeds = np.abs(np.subtract(means["fp32 seed 1"], means["fp32 seed 0"]))
    step_amp = np.abs(got["bf16+channels_last seed 0"] - got["fp32 seed 0"]).mean()
    step_seeds = np.abs(got["fp32 seed 1"] - got["fp32 seed 0"]).mean()
    print(f"per step: mean |bf16+channels_last - fp32| (same seed) {1e3 * step_amp:.4f}, mean |fp32 seed 1 - fp32 "
          f"seed 0| {1e3 * step_seeds:.4f} (x 1e3): {step_amp / step_seeds:.3f} of the seed spread")
    print(f"per window: largest |bf16+channels_last - fp32| {1e3 * amp.max():.4f}, largest seed-to-seed difference "
          f"{1e3 * seeds.max():.4f}; window by window within the seed difference in {int((amp <= seeds).sum())} of "
          f"{len(amp)} (two seeds can meet in a window by chance)")
    ok = step_amp <= step_seeds and amp.max() <= seeds.max()
    print(f"goal: the bf16 curve within the spread of two fp32 seeds (per step and over the windows): "
          f"{'met' if ok else 'NOT met'}")


def _demo_run(demo: Path) -> tuple[Path, Path, Path] | None:
    """(checkpoint, held-out annotations, image folder) of a ``dspose demo`` output folder, if complete."""
    import yaml

    config = demo / "train" / "config.yaml"
    ckpt = next((p for p in (demo / "train" / "best.pt", demo / "train" / "last.pt") if p.is_file()), None)
    if ckpt is None or not config.is_file():
        return None
    data = yaml.safe_load(config.read_text())["data"]
    return ckpt, Path(data["val_ann"]), Path(data["val_images"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_precision", description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=100, help="generated held-out images for the shipped model")
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="demo output folder (LSPET model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also the compiled paths (minutes of compiling)")
    parser.add_argument("--curve", action="store_true", help="also the 3 x --steps loss curves")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="dspose_bench_precision_") as tmp:
        work = Path(tmp)
        paths = generate_dataset(work / "heldout", num_train=0, num_val=args.val, image_size=(96, 128), seed=20_251)
        guard("shipped dspose_t_synthetic", shipped_path("dspose_t_synthetic"), paths["val_json"], paths["val_images"],
              device, args.compile)
        demo = _demo_run(args.demo)
        if demo is not None:
            guard("demo LSPET", *demo, device, args.compile)
        else:
            print(f"demo LSPET checkpoint: no {args.demo}/train/best.pt or last.pt with config.yaml (run `make demo` "
                  "first); skipped")
        if args.curve:
            curves(work, args.steps, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
