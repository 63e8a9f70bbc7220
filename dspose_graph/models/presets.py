"""Named model presets (data, as timm) and the builders: ``create_model``, ``create_model_from_config``.

Paper sizes (DSPose, Sensors 2023, Tab. 1-2) next to what these presets measure are in ``docs/model.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from dspose_graph.models.dspose import DSPose, DSPoseConfig
from topology.schemas import KeypointSchema

log = logging.getLogger(__name__)

_B = dict(schema="coco", input_size=(192, 256), backbone="hrnet_w32", patch_size=(3, 4), dim=192, depths=(12,),
          heads=8, mlp_ratio=3.0, hidden_dim=384, head_layers=2)
# TokenPose-L/D6 (MPII yaml): three stages of 2 blocks, their keypoint tokens concatenated (3 x 192).
_L = dict(schema="mpii", input_size=(256, 256), backbone="hrnet_w48", patch_size=(4, 4), dim=192, depths=(2, 2, 2),
          heads=8, mlp_ratio=3.0, hidden_dim=384)
# CPU demo: smallest timm HRNet, 128x96 crops, 4 blocks of width 96. Its graph head row-normalises A_m: the
# unnormalised A_m (rows sum to ~8 at init) starts at 60x TokenPose's loss and spends ~40 Adam steps
# recovering, too many for a few-minute demo (docs/decisions/model.md). The paper presets keep Eq. 8 as is.
_T = dict(schema="coco", input_size=(96, 128), backbone="hrnet_w18_small", patch_size=(3, 4), dim=96, depths=(4,),
          heads=4, mlp_ratio=2.0, hidden_dim=192, head_layers=2)

PRESETS: dict[str, dict[str, Any]] = {
    "dspose_b": dict(_B, head="dual"),
    "tokenpose_b": dict(_B, head="mlp"),
    # Official TokenPose-L's head is LN(576)->Linear(576, h*w) (its 2-layer branch needs 576 <= 384/2).
    "tokenpose_l": dict(_L, head="mlp", head_layers=1),
    "dspose_l": dict(_L, head="dual", head_layers=2),
    "dspose_t": dict(_T, head="dual", normalize="row"),
    "tokenpose_t": dict(_T, head="mlp"),
}
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(DSPoseConfig))


# Parameter counts the papers report, in millions (DSPose Tab. 1-2; TokenPose Tab. 1).
PAPER_PARAMS_M = {
    "dspose_b": (13.5, "DSPose-B, COCO 256x192, N=2"),
    "dspose_l": (20.8, "DSPose-L; equals official TokenPose-L/D6 at COCO 256x192 (see docs/model.md)"),
    "tokenpose_b": (13.5, "TokenPose-B, COCO 256x192"),
    "tokenpose_l": (20.8, "TokenPose-L/D6, COCO 256x192 (MPII 256x256 official code: 21.49M)"),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(PRESETS)


def _generic_schema(k: int) -> KeypointSchema:
    return KeypointSchema(name=f"k{k}", keypoints=tuple(f"kp{i}" for i in range(k)), skeleton=(), flip_pairs=())


# Fields that must be positive integers, with what they size (for the error message). The graph layer
# checks ``t`` itself, against K.
_POSITIVE_INTS = {"dim": "Transformer token width", "heads": "attention heads", "hidden_dim": "head hidden width",
                  "head_layers": "head layers"}


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_config(config: DSPoseConfig) -> None:
    """Raise ``ValueError`` naming the field when ``config`` cannot build a working model.

    Catches what would otherwise fail deep inside the build (``ZeroDivisionError``, negative dimensions)
    or, worse, build a model whose heatmaps are constant (``dim=0``).
    """
    where = f"model {config.name!r}"
    for field_name, what in _POSITIVE_INTS.items():
        v = getattr(config, field_name)
        if not _is_int(v) or v < 1:
            raise ValueError(f"{where}: field {field_name!r} = {v!r} must be a positive integer ({what})")
    if not config.depths or not all(_is_int(d) and d >= 1 for d in config.depths):
        raise ValueError(f"{where}: field 'depths' = {config.depths!r} must be a non-empty list of positive block counts")
    for field_name in ("input_size", "patch_size"):
        v = getattr(config, field_name)
        if len(v) != 2 or not all(d >= 1 for d in v):
            raise ValueError(f"{where}: field {field_name!r} = {v!r} must be two positive integers (w, h)")
    if config.dim % config.heads:
        raise ValueError(f"{where}: field 'dim' = {config.dim} is not divisible by field 'heads' = {config.heads}")
    if config.dim % 4:
        raise ValueError(f"{where}: field 'dim' = {config.dim} must be divisible by 4 (2-D sine position embedding)")
    if not (isinstance(config.mlp_ratio, (int, float)) and 0 < config.mlp_ratio < float("inf")):
        raise ValueError(f"{where}: field 'mlp_ratio' = {config.mlp_ratio!r} must be a positive number")
    if not (isinstance(config.a, (int, float)) and 0.0 <= config.a <= 1.0):
        raise ValueError(f"{where}: field 'a' = {config.a!r} must be in [0, 1] (A_p = a A_s + (1 - a) 1, Eq. 4)")


def resolve_config(name: str, **overrides: Any) -> DSPoseConfig:
    """The preset ``name`` with ``overrides`` (any :class:`DSPoseConfig` field, ``num_keypoints``, a
    :class:`KeypointSchema` as ``schema``) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    cfg = dict(PRESETS[name], name=name)
    num_keypoints = overrides.pop("num_keypoints", None)
    unknown = sorted(set(overrides) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for model {name!r}; valid: num_keypoints, "
                         f"{', '.join(CONFIG_FIELDS)}")
    cfg.update(overrides)
    if isinstance(cfg["schema"], KeypointSchema):
        cfg["schema"] = cfg["schema"].to_dict()
    config = DSPoseConfig(**cfg)
    check_config(config)
    if num_keypoints is not None:
        if not _is_int(num_keypoints) or num_keypoints < 1:
            raise ValueError(f"model {name!r}: num_keypoints = {num_keypoints!r} must be a positive integer")
        if num_keypoints != config.get_schema().num_keypoints:
            config.schema = _generic_schema(int(num_keypoints)).to_dict()
    return config


def create_model(name: str, pretrained: bool | str | Path | None = None, device: str | torch.device | None = None,
                 **overrides: Any) -> DSPose:
    """Build a preset by name, e.g. ``create_model("dspose_b", t=3, head_layers=1)``.

    Args:
        name: one of :func:`list_models`.
        pretrained: backbone weights: ``None`` (random), a local timm/ImageNet HRNet file, or ``True``
            (timm's download, needs a network).
        device: where to allocate the weights; ``"meta"`` builds shapes only (parameter counting).
        **overrides: :class:`DSPoseConfig` fields; ``num_keypoints`` (a generic schema, needs ``topology``
            for the dual head) or ``schema`` (a name, a dict or a :class:`KeypointSchema`).
    """
    return DSPose(resolve_config(name, **overrides), pretrained_backbone=pretrained, device=device)


def create_model_from_config(config: Mapping[str, Any] | DSPoseConfig) -> DSPose:
    """Rebuild a model from ``dataclasses.asdict(model.config)`` (e.g. a checkpoint's ``model.config``)."""
    if isinstance(config, DSPoseConfig):
        config = dataclasses.replace(config)
    else:
        unknown = sorted(set(config) - set(CONFIG_FIELDS))
        if unknown:
            raise ValueError(f"model config has unknown field(s) {unknown}; valid: {', '.join(CONFIG_FIELDS)}")
        config = DSPoseConfig(**dict(config))
    check_config(config)
    return DSPose(config)


def load_state_dict_checked(model: DSPose, state_dict: Mapping[str, Tensor], source: str) -> None:
    """``model.load_state_dict`` with one clear ValueError naming ``source`` and every mismatch."""
    own = model.state_dict()
    problems = []
    if "encoder.keypoint_tokens" in state_dict and "encoder.keypoint_tokens" in own:
        k_src, k_own = state_dict["encoder.keypoint_tokens"].shape[1], own["encoder.keypoint_tokens"].shape[1]
        if k_src != k_own:
            problems.append(f"it has K={k_src} keypoints, the model K={k_own} ({model.schema.name})")
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
    if problems:
        raise ValueError(f"state dict from {source} does not fit model {model.config.name!r}: " + "; ".join(problems))
    check_finite_weights(state_dict, source)
    model.load_state_dict(dict(state_dict))


def check_finite_weights(state_dict: Mapping[str, Tensor], source: str) -> None:
    """Refuse weights holding NaN or inf: every prediction of such a model would be NaN, blamed on its input."""
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{source}: weight {key!r} holds {bad} NaN/inf value(s) of {value.numel()}: the "
                             "checkpoint is damaged or comes from a diverged run; use an earlier checkpoint "
                             "(e.g. last.pt.prev or best.pt of the run)")
