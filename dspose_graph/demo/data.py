"""Which data the demo trains on, and the settings that go with it.

Order: a COCO-format root given explicitly; else LSP Extended from the shared data folder (its fixed split,
read in place: ``data.kind: lspet``); else a set of generated people (a fresh clone with no data). Generated people are painted
with side colours (left limbs warm, right cool) that a horizontal flip keeps while it swaps the labels, so
on them the demo neither flips in training nor averages a flipped pass at test time
(``docs/decisions/synthetic.md``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspose_graph.io import shared_data_dir
from dspose_graph.train.config import DataConfig

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class DemoData:
    """The resolved data: its config, a sentence for the report, and what its images allow.

    ``real``: photographs (fine-tuned from the shipped weights). ``mirror_safe``: a mirrored image with
    swapped left/right labels is a valid sample, so flip augmentation and flip test may be used.
    """

    config: DataConfig
    description: str
    real: bool
    mirror_safe: bool
    generator: list[str] | None = None  # the generated people's distributions (synthetic data only)


# Settings that differ between real photographs and the generated set (docs/decisions/training.md); explicit
# options override them. Both use PyG's GraphConv in the graph head (models with a graph head only),
# x'_i = W_1 x_i + W_2 sum_j A_m[i, j] x_j, instead of the paper's A_m X W: its root term W_1 x_i keeps each joint's
# own token, so a left joint and its right partner no longer get equal heatmaps from equal A_m rows. Measured on
# generated people from random weights over the same 2,250 steps, swap 8.6% against the paper convolution's 46.6%
# (docs/decisions/synthetic.md); on LSPET the paper convolution collapsed each group of joints to one heatmap
# (docs/decisions/training.md). Real data is budgeted in optimiser steps (the same figures on a slower machine,
# later); generated data in epochs and minutes.
SETTINGS: dict[str, dict[str, Any]] = {
    "real": {"steps": 1500, "epochs": 100, "lr": 1e-3, "augment": True, "conv": "graphconv"},
    "synthetic": {"epochs": 20, "lr": 1e-3, "augment": False, "conv": "graphconv", "minutes": 9.0},
}


def settings_text(key: str) -> str:
    """The defaults of ``key`` in :data:`SETTINGS` for help texts: ``"1e-3 on real data, 2e-3 on generated"``."""
    parts = [f"{SETTINGS[kind][key]:g} on {'real data' if kind == 'real' else 'generated'}"
             for kind in ("real", "synthetic") if key in SETTINGS[kind]]
    return ", ".join(parts) or "none"


def shared_lspet() -> Path | None:
    """LSP Extended in the shared data folder, when it is there."""
    shared = shared_data_dir()
    root = shared / "lspet" if shared is not None else None
    return root if root is not None and (root / "joints.mat").is_file() else None


def is_real(data: str | Path | None) -> bool:
    """Whether the demo trains on photographs: ``data`` given (not ``"synthetic"``), or LSPET found."""
    return str(data) != SYNTHETIC if data is not None else shared_lspet() is not None


def resolve_data(data: str | Path | None, out: Path, *, sigma: float, augment: bool, train_images: int = 1200,
                 val_images: int = 150, seed: int = 0) -> DemoData:
    """The demo's dataset (see the module docstring); LSPET and generated data are written under ``out/data``.

    ``augment`` is the random crop augmentation asked for; on generated people it is forced off (it
    includes flips, which these images do not allow).
    """
    from dspose_graph.data.layouts import coco_paths

    real = is_real(data)
    generator = None
    if real and data is not None:
        train_ann, train_images_dir = coco_paths(Path(data), "train")
        val_ann, val_images_dir = coco_paths(Path(data), "val")
        desc = f"real COCO-format data from {data}: train {train_ann.name}, held-out {val_ann.name}"
    elif real:
        root = shared_lspet()
        config = DataConfig(kind="lspet", root=str(root), augment=augment, sigma=sigma)
        desc = (f"real images: LSP Extended (Johnson & Everingham, CVPR 2011) read in place from {root} with its "
                "fixed split: training images 1-9,000, held-out images 9,001-9,500 (14 LSP joints; "
                "dspose_graph.data.lspet). Other data: --data DIR (COCO-format root) or --data synthetic.")
        log.info("demo data: %s", desc)
        return DemoData(config=config, description=desc, real=True, mirror_safe=True)
    else:
        from dspose_graph.data.synthetic import describe_distributions, generate_dataset

        started = time.perf_counter()
        paths = generate_dataset(out / "data", train_images, val_images, image_size=(192, 256), seed=seed)
        train_ann, train_images_dir = paths["train_json"], paths["train_images"]
        val_ann, val_images_dir = paths["val_json"], paths["val_images"]
        generator = describe_distributions()
        desc = (f"generated people (COCO-17) written by dspose_graph.data.synthetic to {out / 'data'} "
                f"({train_images} training / {val_images} held-out images, seed {seed}, "
                f"{time.perf_counter() - started:.0f} s): "
                + ("asked for with --data synthetic." if data is not None else
                   "no dataset was given (--data / $DATA) and none was found in the shared data folder "
                   "($DSPOSE_DATA or ../shared/data); pass --data DIR for a real one."))
    config = DataConfig(kind="coco", train_ann=str(train_ann), train_images=str(train_images_dir),
                        val_ann=str(val_ann), val_images=str(val_images_dir), augment=augment and real, sigma=sigma)
    log.info("demo data: %s", desc)
    return DemoData(config=config, description=desc, real=real, mirror_safe=real, generator=generator)


def model_overrides(data: DataConfig) -> dict[str, Any]:
    """Preset overrides: the dataset's keypoint schema (by name when it is a built-in one).

    Read from the held-out file, the smaller of the two (COCO 2017: about 10 MB against 240 MB); the training
    set is checked against the model's schema when it is loaded.
    """
    from topology.schemas import SCHEMAS, get_schema

    if data.kind == "lspet":
        return {"schema": "lsp"}
    schema = get_schema(data.val_ann)
    return {"schema": schema.name if SCHEMAS.get(schema.name) == schema else schema.to_dict()}
