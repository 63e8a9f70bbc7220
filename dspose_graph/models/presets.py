"""Named model presets (data, as timm) and the builders: ``create_model``, ``create_model_from_config``.

Paper sizes (DSPose, Sensors 2023, Tab. 1-2) next to what these presets measure are in ``docs/model.md``.
"""

from __future__ import annotations

import dataclasses
import logging
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


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(PRESETS)


def _generic_schema(k: int) -> KeypointSchema:
    return KeypointSchema(name=f"k{k}", keypoints=tuple(f"kp{i}" for i in range(k)), skeleton=(), flip_pairs=())


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
    if num_keypoints is not None and int(num_keypoints) != config.get_schema().num_keypoints:
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
        return DSPose(dataclasses.replace(config))
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"model config has unknown field(s) {unknown}; valid: {', '.join(CONFIG_FIELDS)}")
    return DSPose(DSPoseConfig(**dict(config)))


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
    model.load_state_dict(dict(state_dict))
