"""Training configuration: dataclasses loaded from YAML with strict checking, and ``--set`` overrides.

The one config schema of the project, read by the Python pipeline, the CLI and the experiment runner.
A config is five sections (``model``, ``data``, ``optim``, ``eval``, ``run``) plus an optional ``paper`` block that experiment tables read. The defaults
are the paper's schedule (Adam 1e-3, x0.1 at epochs 200 and 260, 300 epochs, batch 32 per GPU).

Every key is checked: an unknown key, a value of the wrong type or one outside its range (:data:`LIMITS`:
negative epochs, batch size 0, ``limit_train: -5``...) raises ``ValueError`` naming the key and the file, so a
typo never silently falls back to a default. The range check runs whenever a :class:`TrainConfig` is built,
from YAML or in Python (``dspose demo``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    """Which model: a preset of ``dspose_graph.models.create_model`` plus keyword overrides."""

    name: str = "dspose_b"
    overrides: dict[str, Any] = field(default_factory=dict)
    # Start from these weights instead of random ones: a checkpoint path or the name of a shipped weight
    # file (dspose_graph/weights); keypoints are matched by name across skeletons. "" = random init.
    init_from: str = ""
    # Parameter name prefixes that keep their fresh initialisation when init_from is loaded, e.g. [head.] to start
    # a model at another input size (its heatmap layer has another shape) from a trained backbone + Transformer.
    init_exclude: list[str] = field(default_factory=list)
    # ImageNet HRNet weights for the backbone's stages 1-3 (timm or official HRNet layout), a path relative
    # to the working directory as HRNet's models/pytorch/imagenet/ layout; null = random backbone.
    # The paper configs name the file; training stops before reading data when it is missing.
    pretrained: str | None = None


@dataclass
class DataConfig:
    """Which data and how it is cropped and augmented."""

    kind: str = "coco"  # a DATASET_KINDS name: "coco" (COCO-format json + images), "mpii" or "lspet" (joints.mat + images)
    root: str = ""  # prefix for the relative paths below; "" = relative to the working directory
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    val_gt: str = ""  # MPII: the official val ground-truth .mat for PCKh
    input_size: list[int] | None = None  # (w, h); None = the model's own
    sigma: float = 2.0
    codec: str = "tokenpose"  # crop/target/decode conventions: "tokenpose" (official), "hrnet", "udp"
    # Training augmentation: true = the official preset of data.kind, a preset name,
    # or false (none); augment_overrides sets AugmentParams fields (scale_factor, rotation_factor, ...).
    augment: bool | str = True
    augment_overrides: dict[str, float] = field(default_factory=dict)
    # Decode JPEGs at 1/2, 1/4 or 1/8 size when the crop needs fewer pixels: faster, but the input pixels are no
    # longer official TokenPose's (docs/decisions/data.md, "Reduced JPEG decoding"), so off by default.
    reduced_decode: bool = False
    # "uint8": workers hand out the crops' pixels and the batch is normalised on the device after the transfer
    # (a quarter of the bytes; the same input bit for bit); "float32": normalised in the workers.
    image_dtype: str = "float32"
    keep_unannotated: bool = True  # MPII: keep training persons without annotated joints, as official
    val_boxes: str = ""  # COCO: person detections (COCO results JSON) to evaluate on instead of GT boxes
    det_score_thr: float = 0.0  # keep val_boxes detections scoring at least this (official IMAGE_THRE)
    limit_train: int = 0  # 0 = all samples; > 0 = the first N (smoke runs)
    limit_val: int = 0


@dataclass
class OptimConfig:
    """Optimiser and schedule: the paper's Adam schedule by default."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [200, 260])
    gamma: float = 0.1
    epochs: int = 300
    batch_size: int = 32  # per process (per GPU)
    # The global batch (processes x batch_size) that lr was set for; 0 = not stated. Training warns when
    # the actual global batch differs and keeps lr as configured (docs/reproducing.md: the linear rule).
    global_batch: int = 0
    # Micro-batches whose gradients are summed before each optimiser step: the global batch is processes x
    # batch_size x accumulate. "auto" = global_batch / (processes x batch_size), to train the configured global
    # batch on fewer GPUs (BatchNorm still sees batch_size persons at a time).
    accumulate: int | str = 1
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    # Autocast of the training forward pass, eval.precision's names: "fp32" (none), "bf16" (CPU or CUDA),
    # "fp16" (CUDA, with GradScaler) or "auto" (models.runtime.resolve_precision picks by device and CPU).
    precision: str = "fp32"
    # Stop after this many optimiser steps (evaluating then, as at the last epoch), inside an epoch if need be;
    # 0 = train all epochs. A budget in steps gives the same result on a slower machine, later.
    max_steps: int = 0


@dataclass
class EvalConfig:
    """When and how to evaluate."""

    every: int = 10  # epochs; 0 = only at the end
    flip_test: bool = True
    decode: str = "dark"  # "dark" or "argmax"
    batch_size: int = 32
    oks_nms_threshold: float = 0.9  # COCO: OKS-NMS per image, with ground-truth and detected boxes alike
    rescore_threshold: float = 0.2  # COCO: person score = box score x mean keypoint score above this
    # Fast paths of the evaluation forward pass (dspose_graph.models.runtime; docs/speed.md): autocast
    # "fp32", "bf16" or "fp16" (CUDA only), NHWC memory format, torch.compile. Defaults: fp32 eager.
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False


@dataclass
class RunConfig:
    """Where outputs go and how reproducible the run is."""

    out_dir: str = "runs/train"
    seed: int = 0
    deterministic: bool = False
    # DataLoader processes per rank (training and evaluation): a number >= 0, or "auto" = this rank's share of
    # the CPUs less one, at most 16 (train/distributed.py: workers_per_rank).
    workers: int | str = "auto"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"...
    channels_last: bool = False  # NHWC weights and inputs in training (models/runtime.py)
    compile: bool = False  # torch.compile the training model (a sparse graph head runs dense)
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch; 0 = only at epoch ends
    # Epoch-end checkpoints kept as epoch_NNNN.pt besides last.pt and best.pt: the newest N; 0 = none, -1 = all.
    keep_checkpoints: int = 0
    sync_bn: bool = False  # BatchNorm statistics over all processes' batches (SyncBatchNorm; CUDA, >1 process)
    dist_timeout: float = 10.0  # minutes a collective waits for another rank before the run stops with an error
    log_every: int = 10  # steps between progress-bar / TensorBoard updates
    progress: bool = True
    tensorboard: bool = True
    max_minutes: float = 0.0  # wall-clock budget: stop at the first epoch end past it; 0 = none
    # Before training, time this many batches of the loader alone (no model) and log its images/s beside the
    # training step's, so a data-bound run is visible; 0 = off.
    loader_probe: int = 0


@dataclass
class PaperConfig:
    """The paper's number for this row, shown beside ours in experiment tables."""

    table: str = ""
    row: str = ""
    metric: str = ""  # "AP" or "PCKh"
    value: float | None = None
    params_m: float | None = None


# (section, key) -> (lowest allowed value, whether the lowest value itself is allowed). Whole numbers that mean
# "off" or "all" at 0 allow 0; sizes and rates must be positive. Every float must also be finite.
LIMITS: dict[tuple[str, str], tuple[float, bool]] = {
    ("optim", "epochs"): (1, True), ("optim", "max_steps"): (0, True), ("optim", "batch_size"): (1, True), ("optim", "lr"): (0, False),
    ("optim", "weight_decay"): (0, True), ("optim", "gamma"): (0, False), ("optim", "grad_clip"): (0, True),
    ("optim", "milestones"): (1, True), ("optim", "global_batch"): (0, True),
    ("data", "det_score_thr"): (0, True),
    ("eval", "every"): (0, True), ("eval", "batch_size"): (1, True),
    ("data", "limit_train"): (0, True), ("data", "limit_val"): (0, True), ("data", "sigma"): (0, False),
    ("data", "input_size"): (1, True),
    ("run", "workers"): (0, True), ("run", "checkpoint_every"): (0, True), ("run", "log_every"): (0, True), ("run", "loader_probe"): (0, True),
    ("run", "max_minutes"): (0, True), ("run", "keep_checkpoints"): (-1, True), ("run", "dist_timeout"): (0, False),
    ("optim", "accumulate"): (1, True),
}


def check_ranges(config: "TrainConfig") -> None:
    """Raise ``ValueError`` ("optim.epochs = -1: must be >= 1") for the first value outside :data:`LIMITS`."""
    for (section, key), (low, inclusive) in LIMITS.items():
        value = getattr(getattr(config, section), key)
        for i, v in enumerate(value if isinstance(value, list) else [] if value is None else [value]):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue  # a wrong type is reported by the type check with its own message
            name = f"{section}.{key}" + (f"[{i}]" if isinstance(value, list) else "")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{name} = {v}: must be a finite number")
            if v < low or (v == low and not inclusive):
                raise ValueError(f"{name} = {v}: must be {'>=' if inclusive else '>'} {low:g}")
    accumulate = config.optim.accumulate
    if isinstance(accumulate, str) and accumulate != "auto":
        raise ValueError(f"optim.accumulate = {accumulate!r}: expected a whole number >= 1 or 'auto'")
    if config.data.input_size is not None and len(config.data.input_size) != 2:
        raise ValueError(f"data.input_size = {config.data.input_size}: must be [width, height]")


@dataclass
class TrainConfig:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def best_metric(self) -> str:
        """The metric that selects ``best.pt``: OKS AP on COCO-format data, PCKh with the MPII ground-truth
        file, PCK@0.2 otherwise (``DatasetKind.best_metric``)."""
        from dspose_graph.data.layouts import dataset_kind

        return dataset_kind(self.data.kind, "config data.kind").best_metric(bool(self.data.val_gt))


# Keys that were renamed: reading the old name names the new one instead of "unknown key".
RENAMED = {
    "data.udp": "data.udp was replaced by data.codec: write codec: udp for udp: true, codec: hrnet for udp: false "
                "(the old default); the default is now codec: tokenpose (official TokenPose's conventions)",
    "optim.amp": "optim.amp was renamed optim.precision, with eval.precision's names: write precision: fp32 for "
                 "amp: none (bf16, fp16 and auto keep their names)",
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` when that is lossless (int -> float), else raise ValueError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ValueError(f"{where}: unsupported field type {_type_name(tp)}")


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    section = where.rsplit(": ", 1)[-1]
    for key in unknown:
        if f"{section}.{key}" in RENAMED:
            raise ValueError(f"{where}: {RENAMED[f'{section}.{key}']}")
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        tp = hints[name]
        key = f"{where}.{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], key)
        else:
            kwargs[name] = _check_value(raw[name], tp, key)
    return cls(**kwargs)


def config_from_dict(raw: Any, source: str = "<dict>") -> TrainConfig:
    """Build a :class:`TrainConfig` from a plain mapping; errors name the key and ``source``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a config must be a YAML mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} (valid sections: {', '.join(hints)})")
    sections = {name: _build(hints[name], raw.get(name), f"{source}: {name}") for name in hints}
    try:
        return TrainConfig(**sections)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config and its ``base:`` chain, apply ``key.sub=value`` overrides, check every key and type.

    A top-level ``base: RELATIVE/PATH.yaml`` names a file (relative to the one naming it, and possibly with a
    base of its own) whose settings this file starts from: mappings merge key by key with this file winning,
    lists and scalars are replaced whole.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder; expected a YAML file (see experiments/)")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    raw = _read_with_bases(path, ())
    for item in overrides or []:
        check_override(item)
        raw = apply_override(raw, item, source=f"{path} (--set {item})")
    return config_from_dict(raw, source=str(path))


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The mapping in ``path`` merged over its ``base:`` chain; ``chain`` lists the files that led here."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    base = raw.pop("base", None)
    # Each file is checked on its own first, so an unknown key or a bad type names the file that holds it.
    config_from_dict(raw, source=str(path))
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"{path}: base must be a path to a YAML file relative to this file, got {base!r}")
    base_path = path.parent / base
    here = chain + (path.resolve(),)
    if base_path.resolve() in here:
        cycle = " -> ".join(str(p) for p in here[here.index(base_path.resolve()):] + (base_path.resolve(),))
        raise ValueError(f"{path}: base {base!r} makes a cycle of base files: {cycle}")
    if not base_path.is_file():
        raise ValueError(f"{path}: base file {base_path} not found")
    return _merge(_read_with_bases(base_path, here), raw)


def _merge(base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` over ``base``: mappings merge key by key, anything else in ``row`` replaces ``base``'s value."""
    out = _deep_copy(base)
    for key, value in row.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def apply_override(raw: dict[str, Any], item: str, source: str = "--set") -> dict[str, Any]:
    """Return a copy of ``raw`` with ``section.key=value`` set; the value is parsed as YAML (``5e-4``, ``[1, 2]``)."""
    if "=" not in item:
        raise ValueError(f"{source}: expected KEY=VALUE like optim.lr=5e-4, got {item!r}")
    key, text = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ValueError(f"{source}: key {key!r} must be SECTION.FIELD, e.g. optim.lr")
    value = yaml.safe_load(text) if text.strip() else ""
    # YAML reads "1e-3" as a string (it wants "1.0e-3"); a number is what the user meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") and value.lower() not in ("true", "false") else value
        except ValueError:
            pass
    out = _deep_copy(raw)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ValueError(f"{source}: {part!r} is not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value
    return out


def model_overrides(items: list[str]) -> dict[str, Any]:
    """``create_model`` keyword overrides from ``model.overrides.KEY=VALUE`` items: ``--set`` as in training."""
    raw: dict[str, Any] = {"model": {"overrides": {}}}
    for item in items:
        key = item.partition("=")[0].strip()
        if key and "." not in key:
            raise ValueError(f"--set {item}: keys are written as in a training config; write model.overrides.{item}")
        raw = apply_override(raw, item, source=f"--set {item}")
    if set(raw) != {"model"} or set(raw["model"]) != {"overrides"}:
        raise ValueError(f"dspose info takes --set model.overrides.KEY=VALUE only, got {' '.join(items)}")
    return raw["model"]["overrides"]


def check_override(item: str) -> None:
    """Check one ``--set`` item on its own, so that an unknown key or a bad value names the option, not a file."""
    config_from_dict(apply_override({}, item, source=f"--set {item}"), source=f"--set {item}")


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw
