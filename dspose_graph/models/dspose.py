r"""DSPose: HRNet stage 3 -> keypoint tokens (TokenPose) -> MLP or dual-space graph head -> heatmaps.

Read top to bottom: :class:`DSPoseConfig` (every knob, JSON-serialisable), :class:`DSPose` (the model).
Heads and the A_p buffer they build from a topology live in ``heads.py``. Presets live in ``presets.py``.

Shapes (this module):
    B: batch, H, W: input image size, K: keypoints, h = H/4, w = W/4: heatmap size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dspose_graph.models.backbone import HRNetStage3
from dspose_graph.models.heads import HEADS, physical_adjacency_for  # noqa: F401  (re-exported)
from dspose_graph.models.transformer import KeypointTokenEncoder
from topology.schemas import KeypointSchema, get_schema

STRIDE = 4  # HRNet stage-3 high-resolution branch


@dataclass
class DSPoseConfig:
    """Every architecture choice of a DSPose/TokenPose model (sizes are ``(w, h)`` as everywhere in the repo).

    ``schema``: a built-in schema name (``"coco"``, ``"mpii"``) or ``KeypointSchema.to_dict()``.
    ``topology``: ``None`` (the schema's paper groups), ``"mpii"``/``"coco"``/a topology file path, a group
    partition (list of index lists) or a ``(K, K)`` adjacency as nested lists. ``depths``: blocks per
    Transformer stage; the head reads the keypoint tokens after every stage, concatenated (TokenPose-L).
    The graph-head fields are documented on :class:`dspose_graph.models.heads.GraphHead`.
    """

    name: str = "custom"
    schema: str | dict = "coco"
    input_size: tuple[int, int] = (192, 256)
    backbone: str = "hrnet_w32"
    patch_size: tuple[int, int] = (3, 4)
    dim: int = 192
    depths: tuple[int, ...] = (12,)
    heads: int = 8
    mlp_ratio: float = 3.0
    head: str = "dual"
    hidden_dim: int = 384
    head_layers: int = 2
    conv: str = "dspose"
    backend: str = "dense"
    t: int = 4
    a: float = 0.9
    topology: Any = None
    p_mode: str = "scalar"
    p_init: float = 1.0
    af_binary: bool = False
    af_source: str = "layer"
    normalize: str = "none"
    activation: str = "relu"
    residual: bool = False

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; keep the dataclass canonical.
        self.input_size = tuple(int(v) for v in self.input_size)
        self.patch_size = tuple(int(v) for v in self.patch_size)
        self.depths = tuple(int(v) for v in self.depths)
        if isinstance(self.topology, np.ndarray):
            self.topology = self.topology.tolist()
        elif isinstance(self.topology, Path):
            self.topology = str(self.topology)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")

    def get_schema(self) -> KeypointSchema:
        return KeypointSchema.from_dict(self.schema) if isinstance(self.schema, dict) else get_schema(self.schema)


class DSPose(nn.Module):
    """Top-down pose model: image crop -> K heatmaps.

    Shapes:
        input ``(B, 3, H, W)`` float (ImageNet-normalised), output ``(B, K, h, w)``; with
        ``return_adjacency=True`` also the dict of :class:`~dspose_graph.models.heads.GraphHead`, or ``None``
        for a head without a graph (``head="mlp"``).
    """

    def __init__(self, config: DSPoseConfig, pretrained_backbone: bool | str | Path | None = None,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        with torch.device(device or "cpu"):
            self._build(config, pretrained_backbone, device)

    def _build(self, config: DSPoseConfig, pretrained_backbone: bool | str | Path | None,
               device: str | torch.device | None) -> None:
        self.config = config
        self.schema = config.get_schema()
        k = self.schema.num_keypoints
        w, h = config.input_size
        if w % STRIDE or h % STRIDE:
            raise ValueError(f"input size {w}x{h} (w x h) must be divisible by the backbone stride {STRIDE}")
        self.input_size = (w, h)
        self.heatmap_size = (w // STRIDE, h // STRIDE)
        self.backbone = HRNetStage3(config.backbone, pretrained=pretrained_backbone, device=device)
        self.encoder = KeypointTokenEncoder(
            self.backbone.out_channels, self.heatmap_size, config.patch_size, k, config.dim, config.depths,
            config.heads, config.mlp_ratio,
        )
        out_dim = self.heatmap_size[0] * self.heatmap_size[1]
        self.head = HEADS[config.head](config, self.schema, self.encoder.out_dim, out_dim)

    @property
    def num_keypoints(self) -> int:
        return self.schema.num_keypoints

    def forward(self, images: Tensor, return_adjacency: bool = False):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError(f"a batch of 0 images {tuple(images.shape)}: pass at least one crop (B >= 1)")
        w, h = self.input_size
        if images.shape[-2:] != (h, w):
            raise ValueError(f"model expects {w}x{h} (w x h) crops, got {images.shape[-1]}x{images.shape[-2]}")
        tokens = self.encoder(self.backbone(images))
        out = self.head(tokens, return_adjacency=return_adjacency)
        hw, hh = self.heatmap_size
        if return_adjacency:
            heat, adj = out
            return heat.reshape(images.shape[0], -1, hh, hw), adj
        return out.reshape(images.shape[0], -1, hh, hw)
