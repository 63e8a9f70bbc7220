"""The training path a user runs, end to end and timed: ``dspose bench gpu``.

One row per (precision, layout) asked for, each built as ``dspose train CONFIG`` builds it: the config's
datasets and DataLoader (its workers, ``data.image_dtype``, pinned memory), the uint8 normalisation on the
device, the model under ``optim.amp`` and ``run.channels_last``, DDP when launched by ``torchrun``, the loss reads
and checkpoints of the trainer, then the held-out evaluation of the config (flip test, decoding, gathering,
pycocotools). Each row trains two short epochs of ``--steps`` steps: the first warms up (cuDNN autotuning,
``torch.compile``, worker start) and the second is timed; the evaluation runs once inside training and once
more, timed, on ``--eval-crops`` crops. Without CUDA it runs the same path on the CPU and says so: its
figures are the CPU's.

    dspose bench gpu                                                  # the COCO DSPose-B config, its settings
    dspose bench gpu --amp none,bf16 --channels-last false,true       # four rows to compare
    torchrun --nproc-per-node 4 -m dspose_graph bench gpu --amp bf16  # DDP: per-GPU rate vs one process

Sized to finish within 5 minutes on one H100 with four rows (COCO's training annotations are read once, each
row trains 2 x 50 steps of 32 and evaluates 512 crops twice); not yet timed on a GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "coco_dspose_b.yaml"
PRECISION_LABEL = {"none": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler"}


class TimedLoader:
    """Wraps the trainer's DataLoader: the seconds each epoch's loop spent waiting for its next batch."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.waits: list[float] = []

    def __iter__(self) -> Iterator[Any]:
        self.waits.append(0.0)
        batches = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waits[-1] += time.perf_counter() - start
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def _flag_list(text: str, name: str, valid: tuple[str, ...]) -> list[str]:
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in valid]
    if not values or bad:
        raise ValueError(f"--{name} {text!r}: expected a comma-separated list of {', '.join(valid)}")
    return values


def _base_overrides(args: argparse.Namespace, world: int, batch: int, cuda: bool, out: Path) -> list[str]:
    sets = ["optim.epochs=2", "optim.milestones=[]", "eval.every=0", f"data.limit_train={args.steps * batch * world}",
            f"data.limit_val={args.eval_crops}", "run.progress=false", "run.tensorboard=false", "run.max_minutes=0",
            "run.checkpoint_every=0", f"run.out_dir={out}"]
    if not cuda:
        sets.append("run.device=cpu")
    return sets


def _config(args: argparse.Namespace, extra: list[str]) -> Any:
    from dspose_graph.train.config import load_config

    return load_config(args.config, list(args.overrides) + extra)


def _row(config: Any, datasets: tuple[Any, Any], info: Any, device: torch.device, label: str) -> dict[str, Any]:
    """Train two epochs of ``config`` on ``datasets`` (the second timed), evaluate twice (the second timed)."""
    from dspose_graph.train.distributed import all_gather_objects
    from dspose_graph.train.pipeline import build_evaluator, build_model
    from dspose_graph.train.trainer import Trainer

    train_set, val_set = datasets
    torch.manual_seed(config.run.seed)
    model = build_model(config)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    evaluator = build_evaluator(config, model, val_set, device, info)
    trainer = Trainer(model, train_set, config, evaluate=evaluator, device=device, info=info)
    timed = TimedLoader(trainer.loader)
    trainer.loader = timed
    summary = trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    metrics = evaluator(model)
    eval_seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    waits = all_gather_objects((timed.waits[1] if len(timed.waits) > 1 else float("nan"), peak), info)
    seconds = float(summary.history[1]["seconds"])
    images = trainer.steps_per_epoch * config.optim.batch_size * info.world_size
    return {"row": label, "amp": config.optim.amp, "channels_last": config.run.channels_last,
            "images_per_s": images / seconds, "per_gpu": images / seconds / info.world_size,
            "step_ms": 1e3 * seconds / trainer.steps_per_epoch, "data_wait": max(w for w, _ in waits) / seconds,
            "peak_gib": max(p for _, p in waits), "warmup_s": float(summary.history[0]["seconds"]),
            "eval_crops_per_s": len(val_set) / eval_seconds, "eval_s": eval_seconds,
            "metrics": {k: float(v) for k, v in metrics.items()}, "steps": trainer.steps_per_epoch}


def _print_header(config: Any, info: Any, device: torch.device, cuda: bool, train_n: int, val_n: int,
                  workers: int) -> None:
    if not cuda:
        print("CUDA-less mode: no CUDA device is available here, so this runs the same path on the CPU; the figures "
              "below are this CPU's and say nothing about a GPU (run it on a machine with one)")
        where = "CPU"
    else:
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    launcher = f"torchrun, {info.world_size} processes" if info.enabled else "1 process (no torchrun)"
    print(f"device: {where}, {launcher}, torch {torch.__version__}")
    print(f"config: {config.model.name}, {config.data.kind} data at {config.data.root or '.'}, "
          f"batch {config.optim.batch_size} per process, data.image_dtype {config.data.image_dtype}, "
          f"{workers} loader worker(s) per process, run.compile {config.run.compile}")
    print(f"per row: 2 epochs of {train_n // (config.optim.batch_size * info.world_size)} steps ({train_n} crops each; "
          f"epoch 1 warms up, epoch 2 is timed), then the evaluation of {val_n} crops (eval.precision "
          f"{config.eval.precision}, eval.channels_last {config.eval.channels_last}, flip test {config.eval.flip_test})"
          f" inside training and once more, timed")


def _print_rows(rows: list[dict[str, Any]], cuda: bool) -> None:
    print(f"{'precision':<28}{'layout':<8}{'img/s':>9}{'per GPU' if cuda else 'per proc':>9}{'x row 1':>8}"
          f"{'step ms':>9}{'data wait':>10}{'peak GiB':>9}{'warm-up s':>10}{'eval crops/s':>13}")
    for r in rows:
        label = PRECISION_LABEL[r["amp"]] + (" (TF32 matmul/conv)" if cuda and r["amp"] == "none" else "")
        peak = f"{r['peak_gib']:>9.2f}" if cuda else f"{'-':>9}"
        print(f"{label:<28}{'NHWC' if r['channels_last'] else 'NCHW':<8}{r['images_per_s']:>9.1f}{r['per_gpu']:>9.1f}"
              f"{r['images_per_s'] / rows[0]['images_per_s']:>8.2f}{r['step_ms']:>9.1f}{100 * r['data_wait']:>9.1f}%"
              f"{peak}{r['warmup_s']:>10.1f}{r['eval_crops_per_s']:>13.1f}")


def _print_compare(rows: list[dict[str, Any]], info: Any, cuda: bool) -> None:
    print("compare:")
    if len(rows) > 1:
        print("- img/s and 'x row 1' between rows: what bf16 and channels_last gain on this machine, with the same "
              "loader and data; keep the fastest row whose accuracy the checklist in docs/reproducing.md confirmed")
    else:
        print("- img/s against a second run with --amp none,bf16 --channels-last false,true (same loader and data)")
    print("- data wait: the share of the timed epoch the training loop waited for its next batch (largest rank); above "
          "about 10% the loader, not the GPU, sets img/s: raise run.workers, or set data.reduced_decode=true")
    if info.enabled:
        print("- per GPU against the same command without torchrun on one GPU: the ratio is DDP's scaling efficiency "
              "(all-reduce and stragglers); expect above 0.9 on one node")
    else:
        print("- per GPU against `torchrun --nproc-per-node N -m dspose_graph bench gpu` with the same flags: the ratio "
              "is DDP's scaling efficiency (expect above 0.9 on one node)")
    if cuda:
        print("- peak GiB: training memory per GPU at this batch; fp32 rows use TF32 matmuls and convolutions, as "
              "training does (dspose_graph.train.trainer.cuda_defaults)")
    print("- eval crops/s: flip test (two forward passes per crop), decoding, gathering and scoring, per row")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (default: COCO DSPose-B)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as for dspose train (repeatable)")
    parser.add_argument("--amp", default=None, help="optim.amp of each row: none, bf16, fp16, comma-separated "
                        "(default: the config's)")
    parser.add_argument("--channels-last", default=None, help="run.channels_last of each row: true, false, "
                        "comma-separated (default: the config's)")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default 50 on CUDA, 2 on CPU)")
    parser.add_argument("--eval-crops", type=int, default=None, help="held-out crops (default 512 on CUDA, 8 on CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.steps = args.steps or (50 if cuda else 2)
    args.eval_crops = args.eval_crops or (512 if cuda else 8)
    if args.steps < 1 or args.eval_crops < 1:
        raise ValueError(f"--steps {args.steps} and --eval-crops {args.eval_crops} must be at least 1")
    from dspose_graph.train.distributed import cleanup, env_info, init_distributed, resolve_device, workers_per_rank
    from dspose_graph.train.pipeline import build_datasets, build_model

    with tempfile.TemporaryDirectory(prefix="dspose_bench_gpu_") as tmp:
        world = env_info().world_size
        probe = _config(args, [])
        extra = _base_overrides(args, world, probe.optim.batch_size, cuda, Path(tmp))
        if probe.model.pretrained and not Path(probe.model.pretrained).is_file():
            print(f"note: model.pretrained {probe.model.pretrained} not found: random backbone (speed does not depend "
                  "on the starting weights; the evaluation metrics are then meaningless)")
            extra.append("model.pretrained=null")
        base = _config(args, extra)
        amps = _flag_list(args.amp or base.optim.amp, "amp", ("none", "bf16", "fp16"))
        layouts = _flag_list(args.channels_last or str(base.run.channels_last), "channels-last", ("true", "false"))
        try:
            info = init_distributed(resolve_device(base.run.device))
            device = resolve_device(base.run.device, info)
            datasets = build_datasets(base, build_model(base, load_pretrained=False))
            if info.is_main:
                _print_header(base, info, device, cuda, len(datasets[0]), len(datasets[1]),
                              workers_per_rank(base.run.workers, info))
            rows = []
            for amp in amps:
                for layout in layouts:
                    config = _config(args, extra + [f"optim.amp={amp}", f"run.channels_last={layout}",
                                                    f"run.out_dir={Path(tmp) / f'{amp}_{layout}'}"])
                    rows.append(_row(config, datasets, info, device, f"{amp}/{layout}"))
        finally:
            cleanup()
    if info.is_main:
        _print_rows(rows, cuda)
        _print_compare(rows, info, cuda)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"cuda": cuda, "world_size": info.world_size, "rows": rows}, indent=1))
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
