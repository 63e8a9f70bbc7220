"""The training pipeline: a :class:`~dspose_graph.train.config.TrainConfig` in, a trained model and its metrics out.

``train(config)`` builds the model (:func:`build_model`), the datasets (:func:`build_datasets`) and the
held-out evaluator (:func:`build_evaluator`), runs the :class:`~dspose_graph.train.trainer.Trainer` and
returns a :class:`TrainResult`; ``evaluate(config, weights)`` scores a checkpoint on the config's
held-out split. The CLI (``dspose train``), the experiment runner and the demo are thin callers of
these functions. Under ``torchrun`` every process calls the same function (see docs/training.md).

Files written to ``config.run.out_dir``: ``config.yaml``, the trainer's checkpoints and logs, and
``metrics.json`` (``metrics_eval.json`` for :func:`evaluate`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from dspose_graph.io import atomic_write_json, atomic_write_text
from dspose_graph.models import DSPose, create_model
from dspose_graph.models.checkpoint import load_model
from dspose_graph.train.config import TrainConfig, config_to_yaml
from dspose_graph.train.distributed import DistInfo, cleanup, init_distributed, resolve_device
from dspose_graph.train.trainer import Trainer

log = logging.getLogger(__name__)

DATA_KINDS = ("coco", "mpii")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    ``metrics`` are the last held-out evaluation's; ``best`` the best value of ``config.best_metric``;
    ``params`` the trainable parameter count (what papers report; ``params_frozen`` is the fixed sine
    position table); ``last`` and ``best_checkpoint`` the checkpoint files (``None`` on other ranks than 0
    or when no epoch improved). ``model`` is the trained model (on the training device).
    """

    metrics: dict[str, float]
    out_dir: Path
    params: int
    params_frozen: int
    epochs: int
    global_step: int
    best: float | None
    history: list[dict[str, Any]]
    last: Path | None
    best_checkpoint: Path | None
    model: DSPose
    train_set: Dataset
    val_set: Dataset
    world_size: int = 1
    is_main: bool = True


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` parameter counts (frozen: ``requires_grad=False``, e.g. the sine table)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def data_path(config: TrainConfig, field: str, must_exist: bool = True) -> Path:
    """``data.<field>`` resolved against ``data.root``; ``FileNotFoundError`` naming the key when missing."""
    value = getattr(config.data, field)
    if not value:
        raise ValueError(f"config data.{field} is empty: expected a path")
    path = Path(config.data.root) / value if config.data.root else Path(value)
    if must_exist and not path.exists():
        raise FileNotFoundError(f"config data.{field}: {path} does not exist")
    return path


def build_model(config: TrainConfig) -> DSPose:
    """The configured preset, started from ``model.init_from`` weights when given."""
    model = create_model(config.model.name, **config.model.overrides)
    if config.model.init_from:
        from dspose_graph.models.transfer import init_from_checkpoint
        from dspose_graph.weights import resolve_weights

        path = resolve_weights(config.model.init_from)
        report = init_from_checkpoint(model, path)
        log.info("model initialised from %s (%s skeleton; new keypoints: %s)", path, report["source"],
                 ", ".join(report["new"]) or "none")
    return model


def build_dataset(config: TrainConfig, model: DSPose, split: str, augment: bool = False) -> Dataset:
    """The ``split`` (``"train"``/``"val"``) dataset of ``config``, cropped for ``model``; no ``limit_*`` applied.

    Paths come from ``data.<split>_ann`` / ``data.<split>_images``; when both are empty, from the
    official folder layout under ``data.root`` (``dspose_graph.data.layouts``).
    """
    from dspose_graph.data import build_dataset as dataset_from_layout

    d = config.data
    if d.kind not in DATA_KINDS:
        raise ValueError(f"config data.kind={d.kind!r}: expected one of {', '.join(DATA_KINDS)}")
    kwargs: dict[str, Any] = dict(input_size=tuple(d.input_size) if d.input_size else tuple(model.input_size),
                                  heatmap_size=tuple(model.heatmap_size), sigma=d.sigma, udp=d.udp,
                                  schema=model.schema, train=augment)
    if getattr(d, f"{split}_ann") or getattr(d, f"{split}_images"):
        kwargs.update(ann_file=data_path(config, f"{split}_ann"), image_dir=data_path(config, f"{split}_images"))
    return dataset_from_layout(d.kind, d.root or ".", split, **kwargs)


def _limit(dataset: Dataset, n: int) -> Dataset:
    return Subset(dataset, list(range(min(n, len(dataset))))) if n > 0 else dataset  # type: ignore[arg-type]


def build_datasets(config: TrainConfig, model: DSPose, need_train: bool = True) -> tuple[Dataset | None, Dataset]:
    """Training (augmented as ``data.augment`` says; ``None`` when not needed) and validation datasets,
    cut to ``data.limit_train`` / ``data.limit_val``."""
    d = config.data
    train_set = _limit(build_dataset(config, model, "train", d.augment), d.limit_train) if need_train else None
    return train_set, _limit(build_dataset(config, model, "val"), d.limit_val)


def subset_coco(coco: Any, image_ids: set[int]) -> Any:
    """A pycocotools index restricted to ``image_ids`` (so a limited run is not scored on unseen images)."""
    from pycocotools.coco import COCO

    sub = COCO()
    sub.dataset = {**coco.dataset,
                   "images": [im for im in coco.dataset["images"] if im["id"] in image_ids],
                   "annotations": [a for a in coco.dataset["annotations"] if a["image_id"] in image_ids]}
    sub.createIndex()
    return sub


def build_evaluator(config: TrainConfig, model: DSPose, val_set: Dataset, device: torch.device | str = "cpu",
                    info: DistInfo | None = None) -> Callable[[nn.Module], dict[str, float]]:
    """``evaluate(model) -> metrics`` on ``val_set``: OKS AP for COCO-format data, PCKh for full MPII val."""
    from dspose_graph.train.evaluate import compute_metrics, oks_sigmas, predict_dataset

    base = val_set.dataset if isinstance(val_set, Subset) else val_set
    coco_gt = None
    pckh_mat = None
    if config.data.kind == "coco":
        coco_gt = base.coco  # type: ignore[attr-defined]
        if isinstance(val_set, Subset):
            coco_gt = subset_coco(coco_gt, {int(base.records[i].image_id) for i in val_set.indices})  # type: ignore[attr-defined]
    elif config.data.val_gt and not isinstance(val_set, Subset):
        pckh_mat = data_path(config, "val_gt")
    sigmas = oks_sigmas(model.schema)
    info = info or DistInfo()

    def evaluate_model(m: nn.Module) -> dict[str, float]:
        pred = predict_dataset(m, val_set, batch_size=config.eval.batch_size, device=torch.device(device),
                               flip_test=config.eval.flip_test, decode=config.eval.decode, udp=config.data.udp,
                               info=info)
        return compute_metrics(pred, coco_gt=coco_gt, sigmas=sigmas, pckh_mat=pckh_mat)

    return evaluate_model


def _start(config: TrainConfig) -> tuple[DistInfo, torch.device, Path]:
    info = init_distributed(resolve_device(config.run.device))
    device = resolve_device(config.run.device, info)
    out_dir = Path(config.run.out_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", config_to_yaml(config))
    return info, device, out_dir


def _write_metrics(path: Path, metrics: dict[str, float], model: DSPose, config: TrainConfig, source: str,
                   info: DistInfo) -> None:
    if info.is_main:
        trainable, frozen = count_parameters(model)
        atomic_write_json(path, {"metrics": metrics, "params": trainable + frozen, "params_trainable": trainable,
                                 "world_size": info.world_size, "config": source, "model": config.model.name})


def train(config: TrainConfig, *, resume: str | Path | None = None, source: str = "<config>") -> TrainResult:
    """Train as ``config`` says (from the ``resume`` checkpoint when given) and evaluate on its held-out split.

    ``source`` names the config in provenance records (e.g. its YAML path). A distributed process group
    started here (under ``torchrun``) is closed before returning.
    """
    try:
        info, device, out_dir = _start(config)
        torch.manual_seed(config.run.seed)
        model = build_model(config)
        train_set, val_set = build_datasets(config, model)
        assert train_set is not None
        trainable, frozen = count_parameters(model)
        trainer = Trainer(model, train_set, config, evaluate=build_evaluator(config, model, val_set, device, info),
                          device=device, info=info, provenance={"config": source, "params": trainable + frozen})
        summary = trainer.fit(resume=resume)
        _write_metrics(out_dir / "metrics.json", summary.metrics, model, config, source, info)
    finally:
        cleanup()
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    return TrainResult(metrics=summary.metrics, out_dir=out_dir, params=trainable, params_frozen=frozen,
                       epochs=summary.epochs, global_step=summary.global_step, best=summary.best,
                       history=summary.history, last=last if last.is_file() else None,
                       best_checkpoint=best if best.is_file() else None, model=model, train_set=train_set,
                       val_set=val_set, world_size=info.world_size, is_main=info.is_main)


def evaluate(config: TrainConfig, weights: str | Path, *, source: str = "<config>") -> dict[str, float]:
    """Metrics of checkpoint ``weights`` on ``config``'s held-out split (also written to ``metrics_eval.json``).

    The model is rebuilt from the checkpoint's own model config, so ``config.model`` is not consulted.
    """
    try:
        info, device, out_dir = _start(config)
        model, _ = load_model(weights, device)
        _, val_set = build_datasets(config, model, need_train=False)
        metrics = build_evaluator(config, model, val_set, device, info)(model)
        _write_metrics(out_dir / "metrics_eval.json", metrics, model, config, source, info)
    finally:
        cleanup()
    return metrics
