"""Weight files shipped with the package, each with a ``<name>.json`` model card beside it.

Every ``<name>.json`` here names its weight file (``"file"``) and describes it: model preset (``"model"``),
skeleton (``"schema"``), training data, recipe and command, code commit, and metrics (every top-level entry whose
key ends in ``metrics``). A shipped name works wherever a checkpoint path does (``Predictor("NAME")``,
``dspose predict --weights NAME``, ``plot adjacency``, ``export``, ``train --resume/--init-from``);
``dspose weights`` lists them.

``dspose_t_synthetic``: ``dspose_t`` (COCO-17) trained on the project's own synthetic people by
``experiments/pretrain_synthetic_dspose_t.yaml``. No third-party data or weights went into it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent


def shipped_names() -> tuple[str, ...]:
    """The shipped names: one per model card in :data:`WEIGHTS_DIR`, in name order."""
    return tuple(sorted(p.stem for p in WEIGHTS_DIR.glob("*.json")))


SHIPPED = shipped_names()


def model_card(name: str) -> dict[str, Any]:
    """The model card ``<name>.json`` of shipped weights ``name``; ``ValueError`` for an unknown name."""
    if name not in shipped_names():
        raise ValueError(f"unknown shipped weights {name!r}; known: {', '.join(shipped_names())}")
    path = WEIGHTS_DIR / f"{name}.json"
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: model card is not valid JSON ({e})") from None
    if not isinstance(card, dict) or not isinstance(card.get("file"), str):
        raise ValueError(f"{path}: model card must be a JSON object with a 'file' field naming the weights")
    return card


def shipped_path(name: str) -> Path:
    """The weight file of shipped weights ``name`` (the ``"file"`` of its model card)."""
    return WEIGHTS_DIR / model_card(name)["file"]


def _is_name(key: str) -> bool:
    """Whether ``key`` reads as a weight name rather than a file path: no folder and no file extension."""
    return "/" not in key and "\\" not in key and not Path(key).suffix


def lookup_weights(name_or_path: str | Path) -> Path:
    """The file a shipped weight name stands for, else ``name_or_path`` as a path (not checked to exist).

    ``ValueError`` (one line, listing the known names) for a name that is neither shipped nor an existing file.
    """
    key, names = str(name_or_path), shipped_names()
    if key in names:
        return shipped_path(key)
    path = Path(key)
    if _is_name(key) and not path.exists():
        raise ValueError(f"unknown weights {key!r}: not a shipped name ({', '.join(names)}) and no such file")
    return path


def resolve_weights(name_or_path: str | Path) -> Path:
    """A shipped weight name (see :data:`SHIPPED`) or a checkpoint path, as an existing file."""
    path = lookup_weights(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (shipped weight names: "
                                f"{', '.join(shipped_names())})")
    return path


def card_metrics(card: dict[str, Any]) -> dict[str, float]:
    """The numbers of a model card's metric entries (top-level keys ending in ``metrics``), in card order."""
    out: dict[str, float] = {}
    for key, value in card.items():
        if key.endswith("metrics") and isinstance(value, dict):
            out.update({k: float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def format_weights_table() -> str:
    """One line per shipped model: name, preset, skeleton, metrics (with the data they were measured on), file."""
    lines = []
    for name in shipped_names():
        card = model_card(name)
        path = WEIGHTS_DIR / card["file"]
        size = f"{path.stat().st_size / 2**20:.1f} MiB" if path.is_file() else "MISSING"
        metrics = ", ".join(f"{k} {v:g}" for k, v in card_metrics(card).items()) or "no metrics"
        where = next((k for k in card if k.endswith("metrics")), "")
        lines.append(f"{name}: {card.get('model', '?')}, skeleton {card.get('schema', '?')}; "
                     f"{where.replace('_', ' ') or 'metrics'}: {metrics}; file {path} ({size})")
    return "\n".join(lines)
