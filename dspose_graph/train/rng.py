"""RNG states for exact resume: Python, NumPy and torch (CPU) generators as a ``weights_only``-loadable dict.

The trainer stores :func:`rng_state` in its checkpoints (``dspose_graph.models.checkpoint`` writes them) and
restores it with :func:`set_rng_state` on resume. CUDA generators are not saved: nothing in training draws from
them (the models have no dropout; augmentation runs on the CPU, reseeded per sample), and the states of every
visible GPU saved by rank 0 could not be restored where fewer GPUs are visible. A ``"cuda"`` entry of an older
checkpoint is ignored.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and ints, loadable with ``weights_only=True``."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
