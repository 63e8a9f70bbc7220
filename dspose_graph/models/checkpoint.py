"""The checkpoint file: its one writer, its one reader, and the model it describes.

A checkpoint is a plain dict saved with ``torch.save``::

    {"format": "dspose-graph", "format_version": 1,
     "model": {"name": str, "config": DSPoseConfig as a dict}, "schema": KeypointSchema.to_dict(),
     "state_dict": ..., "epoch": int, "metrics": dict, "provenance": dict,
     "inference": {"input_size": [w, h], "heatmap_size": [w, h], "codec": str},
     "config": the training config (optional), ...resume state written by the trainer (optional)}

:func:`checkpoint_state` builds the dict, :func:`save_checkpoint` writes it, :func:`load_checkpoint`
reads and checks it, :func:`load_model` rebuilds the model from the checkpoint's own model config and
:func:`inference_spec` says how to crop and decode for it. Nothing else builds or parses the dict.

Writes go to a temporary file renamed onto the target only once complete (``dspose_graph.io``), so a
crash or a full disk never leaves a half-written checkpoint under the real name; the replaced file is
kept as ``<name>.prev`` (linked there before the rename, so the real name never goes missing). Loading uses ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dspose_graph.io import atomic_path
from dspose_graph.models.dspose import DSPose
from dspose_graph.models.presets import create_model_from_config, load_state_dict_checked
from dspose_graph.weights import lookup_weights
from dspose_graph.topology.schemas import KeypointSchema

FORMAT = "dspose-graph"
FORMAT_VERSION = 1
REQUIRED = ("model", "schema", "state_dict", "epoch")
# data.codec.DEFAULT_CODEC: models/ sits below data/ and does not import it (a test checks they agree).
DEFAULT_CODEC = "tokenpose"
# What a slim weight file keeps: everything but the resume state (optimizer, scheduler, RNG...).
WEIGHT_FIELDS = ("format", "format_version", "model", "schema", "state_dict", "epoch", "metrics", "config",
                 "provenance", "inference")


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    """How a checkpoint's model expects its input cropped and its heatmaps decoded.

    ``input_size`` and ``heatmap_size`` are ``(w, h)``; ``codec`` names the crop, target and decoding
    conventions the model was trained with (``dspose_graph.data.codec.CODECS``).
    """

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    codec: str = DEFAULT_CODEC

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "heatmap_size": list(self.heatmap_size), "codec": self.codec}


def _legacy_codec(udp: Any) -> str:
    # The udp flag written before codecs existed: true meant UDP's conventions, false HRNet's (the old default).
    return "udp" if bool(udp) else "hrnet"


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint that ``path`` replaced is kept."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def checkpoint_state(model: DSPose, *, name: str | None = None, epoch: int = 0,
                     metrics: dict[str, float] | None = None, provenance: dict[str, Any] | None = None,
                     codec: str = DEFAULT_CODEC, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of ``model``: model name + config, schema, weights, inference record, ``extra``.

    ``name`` defaults to the preset name in ``model.config``; ``codec`` is the training config's ``data.codec``;
    ``extra`` holds the training config and the trainer's resume state.
    """
    inference = InferenceSpec(tuple(model.input_size), tuple(model.heatmap_size), str(codec))  # type: ignore[arg-type]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"name": name or model.config.name, "config": dataclasses.asdict(model.config)},
        "schema": model.schema.to_dict(),
        "state_dict": model.state_dict(),
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
        "provenance": dict(provenance or {}),
        "inference": inference.to_dict(),
        **extra,
    }


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
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
        except RuntimeError as e:  # torch's zip writer reports a failed write without the file or the reason
            raise _write_error(path, e) from e
        except OSError as e:
            if e.filename is None:
                e.filename = str(path)
            raise
        if keep_previous and path.exists():
            _keep_previous(path)
    return path


def _write_error(path: Path, error: RuntimeError) -> OSError:
    """The ``OSError`` (exit status 3 at the CLI) for a ``torch.save`` that could not write ``path``."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free on its disk"
    except OSError:
        free = "free space unknown"
    first = (str(error).strip().splitlines() or [""])[0][:120]
    return OSError(errno.EIO, f"could not write the checkpoint ({free}; a full disk or a file size limit, "
                              f"ulimit -f, stops torch.save with: {first}); free space or choose another folder",
                   str(path))


def link_or_copy(src: Path, dst: Path) -> Path:
    """Make ``dst`` a copy of ``src`` (a hard link where the file system has them) while ``src`` stays in place;
    ``dst`` appears whole or not at all (staged beside it, then renamed)."""
    staging = dst.with_name(f".{dst.name}.tmp")
    staging.unlink(missing_ok=True)
    try:
        os.link(src, staging)
    except OSError:  # file systems without hard links
        shutil.copyfile(src, staging)
    os.replace(staging, dst)
    return dst


def _keep_previous(path: Path) -> None:
    """Make ``<path>.prev`` a copy of ``path`` while ``path`` stays in place."""
    link_or_copy(path, previous_path(path))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`; ``path`` may name shipped weights.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a corrupt, truncated or foreign
    file; the message names the file and, when one exists, the previous good checkpoint to resume from.
    """
    path = lookup_weights(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pt"))
        raise ValueError(f"checkpoint {path} is a folder; expected a checkpoint file"
                         + (f" (it holds {', '.join(found[:4])})" if found else ""))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}{_hint(path)}")
    try:
        with warnings.catch_warnings():  # a plain pickle draws a protocol warning before the error that names it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for damaged files
        intact = _intact_foreign_file(path, e)
        if intact:
            raise ValueError(f"{path}: not a dspose-graph checkpoint: {intact}{_hint(path)}") from e
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{path}: corrupt or truncated checkpoint, or not a torch.save file ({type(e).__name__}: "
                         f"{reason}){_hint(path)}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = f"a dict with keys {', '.join(map(str, list(state)[:8]))}" if isinstance(state, dict) \
            else f"a {type(state).__name__}"
        raise ValueError(f"{path}: not a dspose-graph checkpoint (expected a dict with format={FORMAT!r}, found "
                         f"{found}){_hint(path)}")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format_version {version!r}, this version reads {FORMAT_VERSION}")
    for key in REQUIRED:
        if key not in state:
            raise ValueError(f"{path}: checkpoint has no {key!r} field{_hint(path)}")
    return state


def _hint(path: Path) -> str:
    prev = previous_path(path)
    return f"; the previous checkpoint is kept at {prev}" if prev.is_file() else ""


class _Global(Exception):
    """A class or function named in a pickle stream (refused, never imported)."""


class _NoGlobals(pickle.Unpickler):
    """Reads plain data only: any class or function in the stream is refused, so nothing runs."""

    def find_class(self, module: str, name: str) -> Any:
        raise _Global(f"{module}.{name}")


def _intact_foreign_file(path: Path, error: Exception) -> str:
    """What an undamaged file that ``torch.load(weights_only=True)`` refused holds; "" when it looks damaged."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None:
                return ""
        # torch >= 2.4 says "Unsupported global: GLOBAL mod.Name", torch 2.3 "Unsupported class mod.Name"; a
        # builtin is "object" in the one, "__builtin__.object" (the pickle's Python 2 spelling) in the other.
        refused = re.search(r"Unsupported (?:global: GLOBAL|class) (?:__builtin__\.|builtins\.)?(\S+)", str(error))
        found = f" (first found: {refused.group(1)})" if refused else ""
        return (f"an intact torch.save file holding pickled Python objects{found}, not plain weights: a whole "
                f"model or another program's state")
    try:
        with open(path, "rb") as f:
            content = _NoGlobals(f).load()
    except _Global as e:
        return f"a Python pickle holding Python objects (first found: {e}), not a torch.save checkpoint"
    except Exception:  # UnpicklingError, EOFError, ValueError... on a cut or foreign stream
        return ""
    found = f"a dict with keys {', '.join(map(str, list(content)[:8]))}" if isinstance(content, dict) \
        else f"a {type(content).__name__}"
    return f"an intact Python pickle of {found}, not a torch.save checkpoint"


def checkpoint_schema(state: dict[str, Any], path: str | Path) -> KeypointSchema:
    """The :class:`KeypointSchema` stored in checkpoint ``state`` (read from ``path``); a clear error if damaged."""
    try:
        return KeypointSchema.from_dict(state["schema"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: checkpoint field 'schema' is not a keypoint schema ({e})") from None


def inference_spec(state: dict[str, Any], model: nn.Module) -> InferenceSpec:
    """The checkpoint's :class:`InferenceSpec`.

    Older checkpoints decode as they were trained: a record with a ``udp`` flag instead of a codec (written
    before codecs existed) means ``"udp"`` or ``"hrnet"``; without a record (the shipped weights among them)
    the training config's ``data.codec``, else its ``data.udp`` flag, says it, and the sizes come from ``model``.
    """
    record = state.get("inference")
    if isinstance(record, dict):
        codec = record["codec"] if "codec" in record else _legacy_codec(record.get("udp", False))
        return InferenceSpec(tuple(int(v) for v in record["input_size"]),  # type: ignore[arg-type]
                             tuple(int(v) for v in record["heatmap_size"]), str(codec))
    data = (state.get("config") or {}).get("data") if isinstance(state.get("config"), dict) else None
    data = data if isinstance(data, dict) else {}
    codec = data["codec"] if "codec" in data else _legacy_codec(data.get("udp", False))
    return InferenceSpec(tuple(int(v) for v in model.input_size),  # type: ignore[attr-defined]
                         tuple(int(v) for v in model.heatmap_size), str(codec))  # type: ignore[attr-defined]


def load_model(weights: str | Path, device: str | torch.device = "cpu") -> tuple[DSPose, dict[str, Any]]:
    """The model a checkpoint describes, with its weights loaded (eval mode, on ``device``), and the checkpoint.

    Raises ``ValueError`` naming the file when the checkpoint's schema and its model config disagree on
    the keypoints, or when the weights do not fit the model the checkpoint describes.
    """
    state = load_checkpoint(weights, map_location="cpu")
    return model_from_state(state, weights).to(device), state


def model_from_state(state: dict[str, Any], weights: str | Path) -> DSPose:
    """The model checkpoint ``state`` (read from ``weights``) describes, with its weights (eval mode, on CPU);
    errors as :func:`load_model`."""
    model_info = state["model"]
    if not isinstance(model_info, dict) or not isinstance(model_info.get("config"), dict):
        raise ValueError(f"{weights}: checkpoint field 'model' must be a dict with 'name' and 'config'")
    schema = checkpoint_schema(state, weights)
    try:
        model = create_model_from_config(dict(model_info["config"]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{weights}: checkpoint field 'model.config' does not build a model ({e})") from None
    if tuple(model.schema.keypoints) != tuple(schema.keypoints):
        raise ValueError(
            f"{weights}: checkpoint schema {schema.name!r} ({schema.num_keypoints} keypoints) does not match its "
            f"model config ({model.schema.name!r}, {model.schema.num_keypoints} keypoints)")
    load_state_dict_checked(model, state["state_dict"], source=str(weights))
    return model.eval()


def export_weights(src: str | Path, dst: str | Path, **provenance: Any) -> Path:
    """Write the weights of training checkpoint ``src`` to ``dst`` without the resume state.

    Keeps model, schema, weights, epoch, metrics, inference record and training config; ``provenance``
    entries are added to the checkpoint's own. The result loads with :func:`load_model` and ``Predictor``.
    """
    state = load_checkpoint(src)
    slim = {k: state[k] for k in WEIGHT_FIELDS if k in state}
    slim["provenance"] = {**(state.get("provenance") or {}), **provenance}
    return save_checkpoint(dst, slim, keep_previous=False)
