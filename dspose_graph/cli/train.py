"""``dspose train CONFIG.yaml [--resume CKPT] [--set k=v ...]``: train (or evaluate) from a YAML config.

Also the building blocks the experiment runner and the demo share: config -> model, datasets, evaluator,
trainer. Under ``torchrun`` every process runs this same command (see docs/training.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset

from dspose_graph.train.config import TrainConfig, config_to_dict, config_to_yaml, load_config
from dspose_graph.train.distributed import DistInfo, cleanup, init_distributed, resolve_device
from dspose_graph.train.trainer import NonFiniteLossError, Trainer, TrainSettings
from dspose_graph.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

HELP = "train a model from a YAML config (single process or under torchrun)"
DATA_KINDS = ("coco", "mpii")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config (see experiments/ and docs/training.md)")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint to resume from (e.g. OUT/last.pt)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=5e-4 (repeatable)")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate (the --resume checkpoint's weights) and write metrics.json")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    try:
        result = run_training(config, resume=args.resume, eval_only=args.eval_only, source=str(args.config))
    except NonFiniteLossError as e:
        log.error("%s", e)
        return 3
    finally:
        cleanup()
    if result["info"].is_main:
        metrics = result["metrics"]
        print(json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=1))
    return 0


# ------------------------------------------------------------------ building blocks
def data_path(config: TrainConfig, field: str, must_exist: bool = True) -> Path:
    """``data.<field>`` resolved against ``data.root``; ``FileNotFoundError`` naming the key when missing."""
    value = getattr(config.data, field)
    if not value:
        raise ValueError(f"config data.{field} is empty: expected a path")
    path = Path(config.data.root) / value if config.data.root else Path(value)
    if must_exist and not path.exists():
        raise FileNotFoundError(f"config data.{field}: {path} does not exist")
    return path


def build_model(config: TrainConfig) -> torch.nn.Module:
    """The configured preset, started from ``model.init_from`` weights when given."""
    from dspose_graph.models import create_model

    model = create_model(config.model.name, **config.model.overrides)
    if config.model.init_from:
        from dspose_graph.models.transfer import init_from_checkpoint
        from dspose_graph.weights import resolve_weights

        path = resolve_weights(config.model.init_from)
        report = init_from_checkpoint(model, path)
        log.info("model initialised from %s (%s skeleton; new keypoints: %s)", path, report["source"],
                 ", ".join(report["new"]) or "none")
    return model


def _limit(dataset: Dataset, n: int) -> Dataset:
    return Subset(dataset, list(range(min(n, len(dataset))))) if n > 0 else dataset  # type: ignore[arg-type]


def build_datasets(config: TrainConfig, model: torch.nn.Module, need_train: bool = True) -> tuple[Dataset | None, Dataset]:
    """Training (``None`` when not needed) and validation datasets for ``model``'s input and heatmap sizes."""
    d = config.data
    if d.kind not in DATA_KINDS:
        raise ValueError(f"config data.kind={d.kind!r}: expected one of {', '.join(DATA_KINDS)}")
    input_size = tuple(d.input_size) if d.input_size else tuple(model.input_size)  # type: ignore[attr-defined]
    common = dict(input_size=input_size, heatmap_size=tuple(model.heatmap_size),  # type: ignore[attr-defined]
                  sigma=d.sigma, udp=d.udp, schema=model.schema)  # type: ignore[attr-defined]
    if d.kind == "coco":
        from dspose_graph.data.coco import CocoKeypointDataset

        def make(split: str, train: bool) -> Dataset:
            return CocoKeypointDataset(data_path(config, f"{split}_ann"), data_path(config, f"{split}_images"),
                                       train=train, **common)
    else:
        from dspose_graph.data.mpii import MPIIDataset

        def make(split: str, train: bool) -> Dataset:
            return MPIIDataset(data_path(config, f"{split}_ann"), data_path(config, f"{split}_images"),
                               split=split, train=train, **common)
    train_set = _limit(make("train", d.augment), d.limit_train) if need_train else None
    val_set = _limit(make("val", False), d.limit_val)
    return train_set, val_set


def _base(dataset: Dataset) -> Any:
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def subset_coco(coco: Any, image_ids: set[int]) -> Any:
    """A pycocotools index restricted to ``image_ids`` (so a ``--limit`` run is not scored on unseen images)."""
    from pycocotools.coco import COCO

    sub = COCO()
    sub.dataset = {**coco.dataset,
                   "images": [im for im in coco.dataset["images"] if im["id"] in image_ids],
                   "annotations": [a for a in coco.dataset["annotations"] if a["image_id"] in image_ids]}
    sub.createIndex()
    return sub


def build_evaluator(config: TrainConfig, model: torch.nn.Module, val_set: Dataset, device: torch.device,
                    info: DistInfo) -> Callable[[torch.nn.Module], dict[str, float]]:
    """``evaluate(model) -> metrics`` on ``val_set``: OKS AP for COCO-format data, PCKh for full MPII val."""
    from dspose_graph.train.evaluate import compute_metrics, oks_sigmas, predict_dataset

    base = _base(val_set)
    coco_gt = None
    pckh_mat = None
    if config.data.kind == "coco":
        coco_gt = base.coco
        if isinstance(val_set, Subset):
            coco_gt = subset_coco(coco_gt, {int(base.records[i].image_id) for i in val_set.indices})
    elif config.data.val_gt and not isinstance(val_set, Subset):
        pckh_mat = data_path(config, "val_gt")
    sigmas = oks_sigmas(model.schema)  # type: ignore[attr-defined]

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        pred = predict_dataset(m, val_set, batch_size=config.eval.batch_size, device=device,
                               flip_test=config.eval.flip_test, decode=config.eval.decode, udp=config.data.udp,
                               info=info)
        return compute_metrics(pred, coco_gt=coco_gt, sigmas=sigmas, pckh_mat=pckh_mat)

    return evaluate


def settings_from_config(config: TrainConfig) -> TrainSettings:
    o, r = config.optim, config.run
    return TrainSettings(
        epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, weight_decay=o.weight_decay,
        milestones=tuple(o.milestones), gamma=o.gamma, grad_clip=o.grad_clip, amp=o.amp, seed=r.seed,
        deterministic=r.deterministic, workers=r.workers, checkpoint_every=r.checkpoint_every,
        log_every=r.log_every, eval_every=config.eval.every,
        best_metric="AP" if config.data.kind == "coco" else ("PCKh_Mean" if config.data.val_gt else "PCK@0.2"),
        progress=r.progress, tensorboard=r.tensorboard, max_minutes=r.max_minutes)


def run_training(config: TrainConfig, resume: str | Path | None = None, eval_only: bool = False,
                 source: str = "<config>") -> dict[str, Any]:
    """Build everything from ``config`` and train (or only evaluate); returns metrics, params, out dir."""
    provisional = resolve_device(config.run.device)
    info = init_distributed(provisional)
    device = resolve_device(config.run.device, info)
    torch.manual_seed(config.run.seed)
    model = build_model(config)
    train_set, val_set = build_datasets(config, model, need_train=not eval_only)
    evaluate = build_evaluator(config, model, val_set, device, info)
    out_dir = Path(config.run.out_dir)
    params = sum(p.numel() for p in model.parameters())
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", config_to_yaml(config))
    if eval_only:
        if resume is None:
            raise ValueError("--eval-only needs --resume CHECKPOINT (the weights to evaluate)")
        from dspose_graph.models import load_state_dict_checked
        from dspose_graph.train.checkpoint import load_checkpoint

        state = load_checkpoint(resume)
        load_state_dict_checked(model, state["state_dict"], source=str(resume))
        metrics = evaluate(model.to(device))
        result = {"metrics": metrics, "epochs": state["epoch"]}
    else:
        trainer = Trainer(model, train_set, out_dir, settings_from_config(config), model_name=config.model.name,
                          evaluate=evaluate, device=device, info=info,
                          extra={"config": config_to_dict(config),
                                 "provenance": {"config": source, "params": params}})
        result = trainer.fit(resume=resume)
    if info.is_main:
        atomic_write_json(out_dir / ("metrics_eval.json" if eval_only else "metrics.json"),
                          {"metrics": result["metrics"], "params": params, "world_size": info.world_size,
                           "config": source, "model": config.model.name})
    return {**result, "params": params, "out_dir": out_dir, "info": info, "model": model, "val_set": val_set,
            "train_set": train_set, "model_config": dataclasses.asdict(model.config)}  # type: ignore[attr-defined]
