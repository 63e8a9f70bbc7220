"""Checkpoints for the predict/plot/export tests: a real ``dspose_t`` model saved in the checkpoint format."""

from __future__ import annotations

from pathlib import Path

import torch

from dspose_graph.models import create_model
from dspose_graph.models.checkpoint import checkpoint_state, save_checkpoint


def make_checkpoint(path: Path, preset: str = "dspose_t", seed: int = 0, **overrides) -> Path:
    """Save a seeded, randomly initialised ``preset`` model as a dspose-graph checkpoint at ``path``."""
    torch.manual_seed(seed)
    model = create_model(preset, **overrides)
    return save_checkpoint(path, checkpoint_state(model, name=preset, provenance={"test": "random init"}))
