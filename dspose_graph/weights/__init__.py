"""Weight files shipped with the package, each with a ``<name>.json`` provenance record beside it.

``dspose_t_synthetic``: ``dspose_t`` (COCO-17) trained on the project's own synthetic people by
``experiments/pretrain_synthetic_dspose_t.yaml``; ``make demo`` fine-tunes it on real images. No
third-party data or weights went into it.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
SHIPPED = ("dspose_t_synthetic",)


def shipped_path(name: str) -> Path:
    """The file of shipped weights ``name`` (one of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"unknown shipped weights {name!r}; valid: {', '.join(SHIPPED)}")
    return WEIGHTS_DIR / f"{name}.pt"


def resolve_weights(name_or_path: str | Path) -> Path:
    """A shipped weight name (see :data:`SHIPPED`) or a checkpoint path, as an existing file."""
    key = str(name_or_path)
    path = shipped_path(key) if key in SHIPPED else Path(key)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist"
                                + ("" if key in SHIPPED else f" (shipped weight names: {', '.join(SHIPPED)})"))
    return path
