"""Start a model from the weights of one trained on another skeleton (fine-tuning across datasets).

In TokenPose and DSPose only two tensors depend on the keypoint set: the keypoint tokens ``(1, K, D)``
and, in the dual graph head, the physical adjacency ``A_p`` (a buffer built from the target schema's
topology) plus ``p`` when it is a ``(K, K)`` matrix. The backbone, the Transformer and the graph layers
(whose weights are shared by all nodes) carry over unchanged. Keypoints are matched by name
(``dspose_graph.topology.mapping.correspondence``: ``left_knee`` == ``l_knee``); a target keypoint without a
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
from dspose_graph.topology.mapping import correspondence
from dspose_graph.topology.schemas import KeypointSchema

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


def init_from_checkpoint(model: DSPose, weights: str | Path, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Load ``weights`` (a dspose-graph checkpoint) into ``model``, across skeletons when they differ.

    Everything but the keypoint-dependent tensors must fit exactly (a clear ``ValueError`` naming the
    file otherwise), except the tensors under the ``exclude`` name prefixes (e.g. ``"head."``), which keep the
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
    for prefix in exclude:
        keys = [k for k in own if k.startswith(prefix)]
        if not keys:
            raise ValueError(f"init_exclude prefix {prefix!r} matches no tensor of model {model.config.name!r} "
                             f"(top-level parts: {', '.join(sorted({k.split('.')[0] for k in own}))})")
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
