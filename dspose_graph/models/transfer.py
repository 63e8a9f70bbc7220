"""Start a model from the weights of one trained on another skeleton (fine-tuning across datasets).

In TokenPose and DSPose only two tensors depend on the keypoint set: the keypoint tokens ``(1, K, D)``
and, in the dual graph head, the physical adjacency ``A_p`` (a buffer built from the target schema's
topology) plus ``p`` when it is a ``(K, K)`` matrix. The backbone, the Transformer and the graph layers
(whose weights are shared by all nodes) carry over unchanged. Keypoints are matched by name
(``topology.mapping.correspondence``: ``left_knee`` == ``l_knee``); a target keypoint without a
counterpart keeps its fresh initialisation. Example: COCO-17 weights -> LSP-14 keeps 12 tokens and
starts ``upper_neck`` and ``head_top`` anew.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from dspose_graph.models.checkpoint import checkpoint_schema, load_checkpoint
from dspose_graph.models.dspose import DSPose
from dspose_graph.models.presets import load_state_dict_checked
from topology.mapping import correspondence
from topology.schemas import KeypointSchema

TOKENS = "encoder.keypoint_tokens"
P_MATRIX = "head.p"
A_P = "head.a_p"


def transfer_state_dict(state_dict: dict[str, torch.Tensor], source: KeypointSchema, model: DSPose) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``state_dict`` of a ``source``-skeleton model rewritten for ``model``'s skeleton, and a report.

    The report lists ``matched`` ``(target name, source name)`` pairs and the ``new`` target names.
    """
    target = model.schema
    own = model.state_dict()
    match = correspondence(source, target)  # {target index: source index}
    if not match:
        raise ValueError(f"skeletons {source.name!r} and {target.name!r} share no keypoint names; nothing to transfer")
    out = dict(state_dict)
    if TOKENS in state_dict:
        tokens = state_dict[TOKENS]
        if tokens.shape[1] != source.num_keypoints:
            raise ValueError(f"{TOKENS} has {tokens.shape[1]} keypoints but the source schema "
                             f"{source.name!r} has {source.num_keypoints}")
        new = own[TOKENS].clone()
        for t, s in match.items():
            new[:, t] = tokens[:, s]
        out[TOKENS] = new
    if A_P in own:
        out[A_P] = own[A_P]  # the target's own physical topology
    if P_MATRIX in state_dict and state_dict[P_MATRIX].dim() == 2:
        p = own[P_MATRIX].clone()
        for t1, s1 in match.items():
            for t2, s2 in match.items():
                p[t1, t2] = state_dict[P_MATRIX][s1, s2]
        out[P_MATRIX] = p
    report = {"matched": [(target.keypoints[t], source.keypoints[s]) for t, s in sorted(match.items())],
              "new": [n for i, n in enumerate(target.keypoints) if i not in match]}
    return out, report


def adapt_to_input_size(state: dict[str, torch.Tensor], model: DSPose,
                        source_heatmap: tuple[int, int] | None) -> dict[str, list[str]]:
    """Fit ``state`` (a checkpoint's weights, modified in place) to ``model`` when their input sizes differ.

    Two kinds of tensors depend on the input size: the fixed sine position table (one row per visual token; not
    trained, so the model's own table for its token grid is kept) and the layer that writes the heatmaps (one
    output row per heatmap pixel). The heatmap layer's weights and bias, seen as ``(C, h, w)`` maps, are resampled
    bilinearly from the checkpoint's heatmap size ``source_heatmap`` ``(w, h)`` to the model's, so the model at the
    new size starts from the trained one's heatmaps, upsampled, instead of from noise.

    Returns ``resampled`` and ``recomputed`` tensor names.
    """
    import torch.nn.functional as F

    own = model.state_dict()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    out: dict[str, list[str]] = {"resampled": [], "recomputed": []}
    (dw, dh) = tuple(model.heatmap_size)
    for key, value in state.items():
        target = own.get(key)
        if target is None or value.shape == target.shape:
            continue
        if key in frozen:
            state[key] = target
            out["recomputed"].append(key)
        elif (source_heatmap is not None and value.shape[0] == source_heatmap[0] * source_heatmap[1]
              and target.shape[0] == dw * dh and value.shape[1:] == target.shape[1:]):
            sw, sh = source_heatmap
            maps = value.float().reshape(sh, sw, -1).permute(2, 0, 1)[None]  # (1, C, h, w)
            resized = F.interpolate(maps, size=(dh, dw), mode="bilinear", align_corners=False)
            state[key] = resized[0].permute(1, 2, 0).reshape(target.shape).to(target.dtype)
            out["resampled"].append(key)
    return out


def init_from_checkpoint(model: DSPose, weights: str | Path, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Load ``weights`` (a dspose-graph checkpoint) into ``model``, across skeletons when they differ.

    A model at another input size than the checkpoint's is adapted by :func:`adapt_to_input_size` (heatmap
    layers resampled, fixed position tables recomputed). Everything else must fit exactly (a clear ``ValueError``
    naming the file otherwise), except the tensors under the ``exclude`` name prefixes (e.g. ``"head."``), which keep the
    model's fresh initialisation: how a model at another input size starts from a trained body (its heatmap layer
    has another shape). Returns the report of :func:`transfer_state_dict` (all keypoints matched when the
    skeletons are the same).
    """
    ckpt = load_checkpoint(weights, map_location="cpu")
    source = checkpoint_schema(ckpt, weights)
    try:
        state, report = transfer_state_dict(ckpt["state_dict"], source, model)
    except ValueError as e:
        raise ValueError(f"{weights}: {e}") from None
    own = model.state_dict()
    source_hw = (ckpt.get("inference") or {}).get("heatmap_size")
    report.update(adapt_to_input_size(state, model, tuple(source_hw) if source_hw else None))
    for prefix in exclude:
        keys = [k for k in own if k.startswith(prefix)]
        if not keys:
            raise ValueError(f"init_exclude prefix {prefix!r} matches no tensor of model {model.config.name!r} "
                             f"(top-level parts: {', '.join(sorted({k.split('.')[0] for k in own}))})")
        for k in [k for k in state if k.startswith(prefix)]:  # e.g. another graph convolution's weights
            del state[k]
        state.update({k: own[k] for k in keys})  # keep the fresh initialisation
    try:
        load_state_dict_checked(model, state, source=str(weights))
    except ValueError as e:
        hint = ("; to start a model at another input size from these weights, keep the parts whose shape depends "
                "on it fresh: model.init_exclude: [head., encoder.pos_embed]") if "shape mismatches" in str(e) else ""
        raise ValueError(f"{e}{hint}") from None
    report["fresh"] = sorted(p for p in exclude)
    report["source"] = source.name
    return report
