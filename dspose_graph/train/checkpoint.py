"""Checkpoint files: atomic writes, safe loading, and the RNG state needed for exact resume.

A checkpoint is a plain dict (see :data:`FORMAT`)::

    {"format": "dspose-graph", "format_version": 1,
     "model": {"name": str, "config": dict}, "schema": KeypointSchema.to_dict(),
     "state_dict": ..., "epoch": int, "metrics": dict, "provenance": dict,
     ...resume state: "optimizer", "scheduler", "scaler", "rng", "step_in_epoch", "global_step"...}

Writes go to a temporary file that is renamed onto the target only once complete, so a crash or a full
disk never leaves a half-written checkpoint under the real name. When a checkpoint is replaced, the
previous one is kept as ``<name>.prev`` so that a checkpoint damaged later (by a bad disk, a copy cut
short) still has a good predecessor. Loading uses ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspose_graph.io import atomic_path
from topology.schemas import KeypointSchema

log = logging.getLogger(__name__)

FORMAT = "dspose-graph"
FORMAT_VERSION = 1


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint that ``path`` replaced is kept."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def save_checkpoint(path: str | Path, state: dict[str, Any], keep_previous: bool = True) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename); return ``path``.

    On any error (``OSError`` for a full disk included) the temporary file is removed and whatever was at
    ``path`` before is untouched. With ``keep_previous`` the replaced file is kept as ``<path>.prev``.
    """
    path = Path(path)
    state = dict(state)
    state.setdefault("format", FORMAT)
    state.setdefault("format_version", FORMAT_VERSION)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
    return path


WEIGHT_FIELDS = ("format", "format_version", "model", "schema", "state_dict", "epoch", "metrics", "config", "provenance")


def export_weights(src: str | Path, dst: str | Path, **provenance: Any) -> Path:
    """Write the weights of training checkpoint ``src`` to ``dst`` without the resume state.

    Keeps model, schema, weights, epoch, metrics and training config; ``provenance`` entries are added to
    the checkpoint's own. The result loads with :func:`load_checkpoint` and ``Predictor``.
    """
    state = load_checkpoint(src)
    slim = {k: state[k] for k in WEIGHT_FIELDS if k in state}
    slim["provenance"] = {**(state.get("provenance") or {}), **provenance}
    return save_checkpoint(dst, slim, keep_previous=False)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a corrupt, truncated or foreign
    file; the message names the file and, when one exists, the previous good checkpoint to resume from.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for damaged files
        raise ValueError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e}){_hint(path)}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dspose-graph checkpoint (expected a dict with format={FORMAT!r}){_hint(path)}")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format_version {version!r}, this version reads {FORMAT_VERSION}")
    for key in ("model", "schema", "state_dict", "epoch"):
        if key not in state:
            raise ValueError(f"{path}: checkpoint has no {key!r} field{_hint(path)}")
    return state


def checkpoint_schema(state: dict[str, Any], path: str | Path) -> KeypointSchema:
    """The :class:`KeypointSchema` stored in checkpoint ``state`` (read from ``path``); a clear error if damaged."""
    try:
        return KeypointSchema.from_dict(state["schema"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: checkpoint field 'schema' is not a keypoint schema ({e})") from None


def _hint(path: Path) -> str:
    prev = previous_path(path)
    if prev.is_file():
        return f"; the previous checkpoint is kept at {prev}"
    return ""


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and ints, loadable with ``weights_only=True``."""
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
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
