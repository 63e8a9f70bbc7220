"""The training pipeline: a :class:`~dspose_graph.train.config.TrainConfig` in, a trained model and its metrics out.

``train(config)`` builds the model (:func:`build_model`), the datasets (:func:`build_datasets`) and the
held-out evaluator (:func:`build_evaluator`), runs the :class:`~dspose_graph.train.trainer.Trainer` and
returns a :class:`TrainResult`; ``evaluate(config, weights)`` scores a checkpoint on the config's
held-out split; ``dry_run(config)`` builds everything and stops before training. The config's fidelity keys
are read here: ``model.pretrained`` (checked before any data is read), ``data.codec`` (datasets and
evaluation), ``data.augment``, ``data.val_boxes``, the ``eval`` thresholds and ``optim.global_batch``. The CLI (``dspose train``), the experiment runner and the demo are thin callers of
these functions. Under ``torchrun`` every process calls the same function (see docs/training.md).

Files written to ``config.run.out_dir``: ``config.yaml``, the trainer's checkpoints and logs, and
``metrics.json`` (``metrics_eval.json`` for :func:`evaluate`). The folder is locked while a run writes it
(``dspose_graph.io.FolderLock``), so a second run on it stops before writing anything; the first file is written
only after the model, the data, the evaluator and the ``resume`` checkpoint were built and checked, so a
rejected run changes nothing in the folder (one it created is removed again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from dspose_graph.data.augment import AugmentParams, augment_preset
from dspose_graph.data.codec import Codec, get_codec
from dspose_graph.data.image import IMAGE_DTYPES
from dspose_graph.data.layouts import DatasetKind, dataset_kind
from dspose_graph.data.layouts import build_dataset as build_layout_dataset
from dspose_graph.io import FolderLock, atomic_write_json, atomic_write_text
from dspose_graph.models import DSPose, create_model
from dspose_graph.models.checkpoint import inference_spec, load_checkpoint, model_from_state
from dspose_graph.models.complexity import count_parameters
from dspose_graph.models.runtime import (PreparedModel, channels_last_weights, check_device, prepare_model,
                                         resolve_precision)
from dspose_graph.train.config import TrainConfig, config_to_yaml
from dspose_graph.train.distributed import DistInfo, on_main, process_group, workers_per_rank
from dspose_graph.train.optim import accumulation_steps
from dspose_graph.train.trainer import Trainer

log = logging.getLogger(__name__)

# Where the ImageNet HRNet files named by model.pretrained come from (said when one is missing).
PRETRAINED_SOURCE = (
    "the ImageNet HRNet files official HRNet and TokenPose start from (hrnet_w32-36af842e.pth for the -B models, "
    "hrnet_w48-8ef0771d.pth for -L) are in the model zoo linked from the README of "
    "github.com/leoxiaobin/deep-high-resolution-net.pytorch (folder imagenet/, placed as models/pytorch/imagenet/); "
    "timm's hrnet_w32/hrnet_w48 weights load too")


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


def data_path(config: TrainConfig, field: str, must_exist: bool = True) -> Path:
    """``data.<field>`` resolved against ``data.root``; ``FileNotFoundError`` naming the key when missing."""
    value = getattr(config.data, field)
    if not value:
        raise ValueError(f"config data.{field} is empty: expected a path")
    path = Path(config.data.root) / value if config.data.root else Path(value)
    if must_exist and not path.exists():
        raise FileNotFoundError(f"config data.{field}: {path} does not exist")
    return path


def pretrained_path(config: TrainConfig) -> Path | None:
    """``model.pretrained`` (relative to the working directory), or ``None`` for a random backbone.

    Raises ``FileNotFoundError`` naming the file, the backbone and where such files come from when it is missing.
    """
    value = config.model.pretrained
    if value is None:
        return None
    if not value.strip():
        raise ValueError("config model.pretrained is empty: give the ImageNet HRNet file, or null for a random backbone")
    path = Path(value)
    if not path.is_file():
        from dspose_graph.models.presets import resolve_config

        backbone = resolve_config(config.model.name, **config.model.overrides).backbone
        raise FileNotFoundError(
            f"config model.pretrained: {path} not found (relative to {Path.cwd()}); it holds the ImageNet weights "
            f"the {backbone} backbone of {config.model.name} starts from, as in official TokenPose. {PRETRAINED_SOURCE}. "
            "Or set model.pretrained: null to train from a random backbone (not the paper's recipe); "
            "see docs/reproducing.md")
    return path


def build_model(config: TrainConfig, load_pretrained: bool = True) -> DSPose:
    """The configured preset: its backbone from ``model.pretrained`` (unless ``load_pretrained`` is off, e.g.
    to count parameters), then ``model.init_from`` weights when given."""
    pretrained = pretrained_path(config) if load_pretrained else None
    model = create_model(config.model.name, pretrained=pretrained, **config.model.overrides)
    if config.model.init_from:
        from dspose_graph.models.transfer import init_from_checkpoint
        from dspose_graph.weights import resolve_weights

        path = resolve_weights(config.model.init_from)
        report = init_from_checkpoint(model, path, exclude=config.model.init_exclude)
        log.info("model initialised from %s (%s skeleton; new keypoints: %s; fresh: %s; resampled to the heatmap "
                 "size: %s; recomputed: %s)", path, report["source"], ", ".join(report["new"]) or "none",
                 ", ".join(report["fresh"]) or "none", ", ".join(report["resampled"]) or "none",
                 ", ".join(report["recomputed"]) or "none")
    return model


def codec_of(config: TrainConfig) -> Codec:
    """The :class:`~dspose_graph.data.codec.Codec` named by ``data.codec``."""
    try:
        return get_codec(config.data.codec)
    except ValueError as e:
        raise ValueError(f"config data.codec: {e}") from None


def kind_of(config: TrainConfig) -> DatasetKind:
    """The :data:`~dspose_graph.data.layouts.DATASET_KINDS` entry named by ``data.kind``."""
    return dataset_kind(config.data.kind, "config data.kind")


def augment_of(config: TrainConfig) -> AugmentParams | None:
    """The training augmentation of ``data.augment`` (+ ``data.augment_overrides``); ``None`` when it is off."""
    d = config.data
    if d.augment is False or d.augment == "none":
        return None
    name = kind_of(config).augment if d.augment is True else d.augment
    fields = {f.name for f in dataclasses.fields(AugmentParams)}
    unknown = sorted(set(d.augment_overrides) - fields)
    if unknown:
        raise ValueError(f"config data.augment_overrides: unknown field {unknown[0]!r} (valid: {', '.join(sorted(fields))})")
    try:
        return augment_preset(name, **d.augment_overrides)
    except ValueError as e:
        raise ValueError(f"config data.augment: {e}") from None


def build_dataset(config: TrainConfig, model: DSPose, split: str, augment: bool = False) -> Dataset:
    """The ``split`` (``"train"``/``"val"``) dataset of ``config``, cropped for ``model``; no ``limit_*`` applied.

    Paths come from ``data.<split>_ann`` / ``data.<split>_images``; when both are empty, from the
    official folder layout under ``data.root`` (``dspose_graph.data.layouts``). ``augment`` applies
    :func:`augment_of`; the COCO val split takes its person boxes from ``data.val_boxes`` when set.
    """
    d = config.data
    kind = kind_of(config)
    if d.image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"config data.image_dtype={d.image_dtype!r}: expected one of {', '.join(IMAGE_DTYPES)}")
    params = augment_of(config) if augment else None
    kwargs: dict[str, Any] = dict(input_size=tuple(d.input_size) if d.input_size else tuple(model.input_size),
                                  heatmap_size=tuple(model.heatmap_size), sigma=d.sigma, codec=codec_of(config),
                                  schema=model.schema, train=params is not None, augment=params,
                                  reduced_decode=d.reduced_decode, image_dtype=d.image_dtype)
    kwargs.update({key: getattr(d, key) for key in kind.options})
    if d.val_boxes and split == "val":
        if not kind.detections:
            raise ValueError(f"config data.val_boxes is for COCO-format data, not data.kind={d.kind!r}")
        kwargs.update(detections=data_path(config, "val_boxes"), det_score_thr=d.det_score_thr)
    if getattr(d, f"{split}_ann") or getattr(d, f"{split}_images"):
        kwargs.update(ann_file=data_path(config, f"{split}_ann"), image_dir=data_path(config, f"{split}_images"))
    return build_layout_dataset(d.kind, d.root or ".", split, **kwargs)


def _limit(dataset: Dataset, n: int) -> Dataset:
    return Subset(dataset, list(range(min(n, len(dataset))))) if n > 0 else dataset  # type: ignore[arg-type]


def build_datasets(config: TrainConfig, model: DSPose, need_train: bool = True) -> tuple[Dataset | None, Dataset]:
    """Training (augmented as ``data.augment`` says; ``None`` when not needed) and validation datasets,
    cut to ``data.limit_train`` / ``data.limit_val``. ``ValueError`` naming the annotation file when one has no
    usable person."""
    d = config.data
    train_set = _limit(build_dataset(config, model, "train", d.augment), d.limit_train) if need_train else None
    val_set = _limit(build_dataset(config, model, "val"), d.limit_val)
    for split, dataset in (("train", train_set), ("val", val_set)):
        if dataset is not None:
            check_samples(config, split, dataset)
    return train_set, val_set


def check_samples(config: TrainConfig, split: str, dataset: Dataset) -> None:
    """Refuse a split without samples, naming its annotation file and why its annotations were skipped."""
    if len(dataset):  # type: ignore[arg-type]
        return
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    key = f"data.{split}_ann" if getattr(config.data, f"{split}_ann") else "data.root"
    source = getattr(base, "ann_file", None) or getattr(base, "source", "")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(getattr(base, "skipped", {}).items())) or "none"
    raise ValueError(f"config {key}: {source} has no usable person for the {split} split (annotations skipped: "
                     f"{skipped}); a sample is a non-crowd person box with at least one labelled keypoint "
                     "(visibility 1 or 2): give a file that has some")


def subset_coco(coco: Any, image_ids: set[int]) -> Any:
    """A pycocotools index restricted to ``image_ids`` (so a limited run is not scored on unseen images)."""
    from pycocotools.coco import COCO

    sub = COCO()
    sub.dataset = {**coco.dataset,
                   "images": [im for im in coco.dataset["images"] if im["id"] in image_ids],
                   "annotations": [a for a in coco.dataset["annotations"] if a["image_id"] in image_ids]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; `dspose train` prints JSON only
        sub.createIndex()
    return sub


def build_evaluator(config: TrainConfig, model: DSPose, val_set: Dataset, device: torch.device | str = "cpu",
                    info: DistInfo | None = None, fixed_weights: bool = False) -> Callable[[nn.Module], dict[str, float]]:
    """``evaluate(model) -> metrics`` on ``val_set``: OKS AP for COCO-format data, PCKh for full MPII val.

    ``fixed_weights``: the model's weights will not change between calls (evaluating a saved checkpoint), so
    with ``eval.compile`` its compiled graph may freeze them; during training they change and are not frozen.
    """
    from dspose_graph.train.evaluate import compute_metrics, metrics_once, oks_sigmas, predict_dataset

    base = val_set.dataset if isinstance(val_set, Subset) else val_set
    coco_gt = None
    pckh_mat = None
    if kind_of(config).scoring == "oks":
        coco_gt = base.coco  # type: ignore[attr-defined]
        if isinstance(val_set, Subset):
            coco_gt = subset_coco(coco_gt, {int(base.records[i].image_id) for i in val_set.indices})  # type: ignore[attr-defined]
    elif config.data.val_gt and not isinstance(val_set, Subset):
        pckh_mat = data_path(config, "val_gt")
    sigmas = oks_sigmas(model.schema)
    info = info or DistInfo()
    e = config.eval
    try:
        precision, why = resolve_precision(e.precision, device)
    except ValueError as err:
        raise ValueError(f"config eval.precision: {err}") from None
    if e.precision != precision:
        log.info("evaluation precision %s (eval.precision=%s: %s)", precision, e.precision, why)

    prepared: list[PreparedModel] = []  # one per evaluated model, so that compilation happens once

    def evaluate_model(m: nn.Module) -> dict[str, float]:
        if not prepared or prepared[0].original is not m:
            # A saved checkpoint's model is converted in place; a model in training keeps its own layout (its
            # optimiser's moments have it) and runs NHWC copies of its weights (channels_last_weights below).
            runner = prepare_model(m, device, precision=precision, channels_last=e.channels_last and fixed_weights,
                                   compile=e.compile, freeze=e.compile and fixed_weights)
            prepared[:] = [dataclasses.replace(runner, channels_last=e.channels_last)]
        runner = prepared[0]
        with channels_last_weights(m, e.channels_last and not fixed_weights):
            pred = predict_dataset(m, val_set, batch_size=e.batch_size, device=torch.device(device),
                                   flip_test=e.flip_test, decode=e.decode, codec=codec_of(config), info=info,
                                   forward=runner, workers=workers_per_rank(config.run.workers, info))
        return metrics_once(lambda: compute_metrics(pred, coco_gt=coco_gt, sigmas=sigmas, pckh_mat=pckh_mat,
                            nms_threshold=e.oks_nms_threshold, rescore_threshold=e.rescore_threshold,
                            schema=model.schema), info)

    return evaluate_model


def check_global_batch(config: TrainConfig, world_size: int) -> int:
    """Log processes x per-process batch x accumulated micro-batches and the lr; warn when that global batch is not
    ``optim.global_batch``.

    The lr is never rescaled here: a run on fewer GPUs than the paper's trains with the configured lr unless
    the user changes it (docs/reproducing.md gives the linear rule) or accumulates gradients to the configured
    global batch (``optim.accumulate``). Returns the actual global batch.
    """
    o = config.optim
    steps = accumulation_steps(config, world_size)
    actual = world_size * o.batch_size * steps
    acc = f" x {steps} accumulated" if steps > 1 else ""
    log.info("batch: %d process(es) x %d per process%s = global batch %d, lr %g", world_size, o.batch_size, acc,
             actual, o.lr)
    if o.global_batch and actual != o.global_batch:
        linear = o.lr * actual / o.global_batch
        hint = ("; or keep that global batch with --set optim.accumulate=auto"
                if o.global_batch % (world_size * o.batch_size) == 0 else "")
        log.warning("global batch %d (%d process(es) x %d%s) differs from optim.global_batch %d that lr %g is set "
                    "for; training with lr %g as configured (the linear rule would give lr %g: --set optim.lr=%g%s)",
                    actual, world_size, o.batch_size, acc, o.global_batch, o.lr, o.lr, linear, linear, hint)
    return actual


def check_run_device(config: TrainConfig) -> None:
    """Refuse a ``run.device`` that torch does not know or that this machine lacks, naming the key."""
    if config.run.device != "auto":
        check_device(config.run.device, option="config run.device")


@contextlib.contextmanager
def _session(config: TrainConfig) -> Iterator[tuple[DistInfo, Path]]:
    """In the process group (joined here unless a caller already did, see ``distributed.process_group``), with
    ``run.out_dir`` locked by rank 0; a refused lock stops every rank."""
    check_run_device(config)
    lock = FolderLock(config.run.out_dir, "run.out_dir")
    with process_group(config.run.device, config.run.dist_timeout) as info:
        try:
            # Before the first write: a second run on this folder stops here.
            # Only the outcome crosses to the other ranks (the lock object holds its refresh thread's lock).
            on_main(lambda: lock.acquire() and None, info, f"taking the run folder {config.run.out_dir}")
            yield info, Path(config.run.out_dir)
        finally:
            lock.release()


def _write_config(config: TrainConfig, info: DistInfo) -> None:
    """``config.yaml``, written once every input was checked: a rejected run leaves a finished run's file alone."""
    path = Path(config.run.out_dir) / "config.yaml"
    on_main(lambda: atomic_write_text(path, config_to_yaml(config)), info, f"writing {path}")


def _write_metrics(path: Path, metrics: dict[str, float], model: DSPose, config: TrainConfig, source: str,
                   info: DistInfo) -> None:
    trainable, frozen = count_parameters(model)
    on_main(lambda: atomic_write_json(path, {"metrics": metrics, "params": trainable + frozen,
                                             "params_trainable": trainable, "world_size": info.world_size,
                                             "config": source, "model": config.model.name}), info, f"writing {path}")


def train(config: TrainConfig, *, resume: str | Path | None = None, source: str = "<config>") -> TrainResult:
    """Train as ``config`` says (from the ``resume`` checkpoint when given) and evaluate on its held-out split.

    ``resume`` is a checkpoint path, or ``"auto"``: the run folder's newest checkpoint when it has one, else a new
    run (``train.run_folder``). ``source`` names the config in provenance records (e.g. its YAML path). Under
    ``torchrun`` the process group is joined here and left before returning, unless the caller joined it
    (``distributed.process_group``, as the experiment runner does around its rows).
    """
    with _session(config) as (info, out_dir):
        device = info.device
        if info.is_main:
            check_global_batch(config, info.world_size)
        torch.manual_seed(config.run.seed)
        model = build_model(config)
        train_set, val_set = build_datasets(config, model)
        assert train_set is not None
        trainable, frozen = count_parameters(model)
        trainer = Trainer(model, train_set, config, evaluate=build_evaluator(config, model, val_set, device, info),
                          device=device, info=info, provenance={"config": source, "params": trainable + frozen})
        if resume is not None:
            trainer.resume(resume)  # a checkpoint that does not fit stops the run before anything is written
        _write_config(config, info)
        summary = trainer.fit(resume=resume)
        _write_metrics(out_dir / "metrics.json", summary.metrics, model, config, source, info)
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    return TrainResult(metrics=summary.metrics, out_dir=out_dir, params=trainable, params_frozen=frozen,
                       epochs=summary.epochs, global_step=summary.global_step, best=summary.best,
                       history=summary.history, last=last if last.is_file() else None,
                       best_checkpoint=best if best.is_file() else None, model=model, train_set=train_set,
                       val_set=val_set, world_size=info.world_size, is_main=info.is_main)


def evaluate(config: TrainConfig, weights: str | Path, *, source: str = "<config>") -> dict[str, float]:
    """Metrics of checkpoint ``weights`` on ``config``'s held-out split (also written to ``metrics_eval.json``).

    The model is rebuilt from the checkpoint's own model config, so ``config.model`` is not consulted, and the
    held-out crops are cut and decoded with the codec the checkpoint records (``data.codec`` is overridden).
    ``weights`` is a checkpoint path or a shipped weight name.
    """
    with _session(config) as (info, out_dir):
        # Rank 0 reads the file, the others get its content (node-local run folders, as for --resume).
        state = on_main(lambda: load_checkpoint(weights), info, f"reading checkpoint {weights}")
        model = model_from_state(state, weights).to(info.device)
        codec = inference_spec(state, model).codec
        if codec != config.data.codec:
            log.info("%s was trained with codec %r: evaluating with it instead of data.codec=%r", weights, codec,
                     config.data.codec)
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, codec=codec))
        _, val_set = build_datasets(config, model, need_train=False)
        evaluator = build_evaluator(config, model, val_set, info.device, info, fixed_weights=True)
        _write_config(config, info)
        metrics = evaluator(model)
        _write_metrics(out_dir / "metrics_eval.json", metrics, model, config, source, info)
    return metrics


def dry_run(config: TrainConfig) -> dict[str, Any]:
    """Build what :func:`train` builds and read one sample of each split, then stop before training.

    Checks a config and every file it names (pretrained backbone, annotations, images, detections, MPII ground
    truth) in minutes on a CPU; nothing is written. Returns a summary: model, trainable parameters, backbone
    file, codec, augmentation, samples per split, processes, batch and lr.
    """
    with process_group(config.run.device, config.run.dist_timeout) as info:
        check_run_device(config)
        device = info.device
        global_batch = check_global_batch(config, info.world_size)
        model = build_model(config)
        train_set, val_set = build_datasets(config, model)
        assert train_set is not None
        build_evaluator(config, model, val_set, device, info)
        for dataset in (train_set, val_set):
            dataset[0]
    params = augment_of(config)
    return {"model": config.model.name, "params": count_parameters(model)[0],
            "pretrained": config.model.pretrained, "codec": config.data.codec,
            "augment": dataclasses.asdict(params) if params else None,
            "train_samples": len(train_set), "val_samples": len(val_set),  # type: ignore[arg-type]
            "val_boxes": config.data.val_boxes or None, "world_size": info.world_size,
            "batch_per_process": config.optim.batch_size, "global_batch": global_batch, "lr": config.optim.lr}
