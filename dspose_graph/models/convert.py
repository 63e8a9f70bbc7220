"""Official TokenPose checkpoints (leeyegy/TokenPose) -> our DSPose/TokenPose models.

The official model is ``pre_feature`` (an HRNet cut after stage 3 whose module names match timm's) and
``transformer`` (``TokenPose_TB_base`` for B, ``TokenPose_L_base`` with ``transformer1..3`` for L). Key map:

=============================================================  ==========================================
official                                                       ours
=============================================================  ==========================================
``pre_feature.<hrnet>``                                        ``backbone.net.<hrnet>``
``transformer.keypoint_token``                                 ``encoder.keypoint_tokens``
``transformer.pos_embedding``                                  ``encoder.pos_embed``
``transformer.patch_to_embedding.*``                           ``encoder.patch_embed.*``
``transformer.transformer[S].layers.I.0.fn.norm.*``            ``encoder.stages.S.I.norm1.*``
``transformer.transformer[S].layers.I.0.fn.fn.to_qkv.weight``  ``encoder.stages.S.I.attn.qkv.weight``
``transformer.transformer[S].layers.I.0.fn.fn.to_out.0.*``     ``encoder.stages.S.I.attn.proj.*``
``transformer.transformer[S].layers.I.1.fn.norm.*``            ``encoder.stages.S.I.norm2.*``
``transformer.transformer[S].layers.I.1.fn.fn.net.0/3.*``      ``encoder.stages.S.I.mlp.0/2.*``
``transformer.mlp_head.N.*``                                   ``head.mlp.N.*`` (MLP head only)
=============================================================  ==========================================

``[S]`` is empty for B (one stage) and ``1``, ``2``, ``3`` for L.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping

from torch import Tensor

from dspose_graph.models.backbone import read_state_dict
from dspose_graph.models.dspose import DSPose
from dspose_graph.models.presets import create_model, load_state_dict_checked

log = logging.getLogger(__name__)

_LAYER = re.compile(r"^transformer\.transformer(\d*)\.layers\.(\d+)\.([01])\.fn\.(.+)$")
_BLOCK_PARTS = {
    ("0", "norm"): "norm1", ("0", "fn.to_qkv"): "attn.qkv", ("0", "fn.to_out.0"): "attn.proj",
    ("1", "norm"): "norm2", ("1", "fn.net.0"): "mlp.0", ("1", "fn.net.3"): "mlp.2",
}
_SIMPLE = {
    "transformer.keypoint_token": "encoder.keypoint_tokens",
    "transformer.pos_embedding": "encoder.pos_embed",
    "transformer.patch_to_embedding.weight": "encoder.patch_embed.weight",
    "transformer.patch_to_embedding.bias": "encoder.patch_embed.bias",
}


def convert_key(key: str) -> str:
    """Our name for one official TokenPose state-dict key; ValueError for keys with no counterpart."""
    if key in _SIMPLE:
        return _SIMPLE[key]
    if key.startswith("pre_feature."):
        return "backbone.net." + key[len("pre_feature."):]
    if key.startswith("transformer.mlp_head."):
        return "head.mlp." + key[len("transformer.mlp_head."):]
    m = _LAYER.match(key)
    if m:
        stage = int(m.group(1)) - 1 if m.group(1) else 0
        sub, rest = m.group(3), m.group(4)
        module, _, param = rest.rpartition(".")
        if (sub, module) in _BLOCK_PARTS:
            return f"encoder.stages.{stage}.{m.group(2)}.{_BLOCK_PARTS[sub, module]}.{param}"
    raise ValueError(f"official TokenPose key {key!r} has no counterpart in our model")


def convert_tokenpose_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official TokenPose state dict (``module.`` prefixes allowed) to our key names."""
    return {convert_key(k.removeprefix("module.")): v for k, v in state_dict.items()}


def load_tokenpose_weights(model: DSPose, state_dict: Mapping[str, Tensor], source: str) -> list[str]:
    """Copy official TokenPose weights into ``model``; returns the model keys left as initialised.

    For TokenPose presets everything must match (checked, errors name ``source``). For DSPose presets the
    backbone, tokens and Transformer are loaded and the graph head keeps its initialisation (returned).
    """
    ours = convert_tokenpose_state_dict(state_dict)
    if model.config.head == "mlp":
        load_state_dict_checked(model, ours, source)
        return []
    body = {k: v for k, v in ours.items() if not k.startswith("head.")}
    own = model.state_dict()
    kept = [k for k in own if k.startswith("head.")]
    load_state_dict_checked(model, {**body, **{k: own[k] for k in kept}}, source)
    log.info("loaded TokenPose body from %s; graph head (%d tensors) keeps its initialisation", source, len(kept))
    return kept


def model_from_tokenpose(path: str | Path, preset: str = "tokenpose_b", **overrides) -> DSPose:
    """Build ``preset`` (K taken from the checkpoint unless given) and load an official TokenPose file."""
    state = read_state_dict(path)
    ours = convert_tokenpose_state_dict(state)
    if "encoder.keypoint_tokens" in ours and "num_keypoints" not in overrides and "schema" not in overrides:
        k = ours["encoder.keypoint_tokens"].shape[1]
        known = {16: "mpii", 17: "coco"}
        if k in known:
            overrides["schema"] = known[k]
        else:
            overrides["num_keypoints"] = k
    model = create_model(preset, **overrides)
    load_tokenpose_weights(model, state, str(path))
    return model
