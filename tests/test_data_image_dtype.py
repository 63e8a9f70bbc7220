"""``data.image_dtype: uint8``: workers hand out crop pixels, the batch is normalised after the transfer.

Everything is bit-identical to float32 samples: the normalised input, and so a seeded training run's losses and
its evaluation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dspose_graph.data import build_dataset
from dspose_graph.data.image import normalize_batch
from dspose_graph.train.config import config_from_dict
from dspose_graph.train.logs import read_csv
from dspose_graph.train.pipeline import train


@pytest.mark.parametrize("split, train_mode", [("val", False), ("train", True)])
def test_uint8_samples_normalise_to_the_float32_ones(synthetic_coco: Path, split, train_mode):
    kwargs = dict(train=train_mode, seed=5 if train_mode else None)
    floats = build_dataset("coco", synthetic_coco, split, **kwargs)
    pixels = build_dataset("coco", synthetic_coco, split, image_dtype="uint8", **kwargs)
    for i in range(0, len(floats), 3):
        a, b = floats[i], pixels[i]
        assert b["image"].dtype == torch.uint8 and b["image"].shape == a["image"].shape
        assert torch.equal(normalize_batch(b["image"][None]), a["image"][None])
        assert torch.equal(b["heatmap"], a["heatmap"])


def test_normalize_batch_passes_float32_and_refuses_other_input():
    x = torch.zeros(2, 3, 4, 4)
    assert normalize_batch(x) is x
    with pytest.raises(ValueError, match=r"expects uint8 \(B, 3, H, W\) or float32 images, got torch.float64"):
        normalize_batch(x.double())
    with pytest.raises(ValueError, match=r"got torch.uint8 \(3, 4, 4\)"):
        normalize_batch(torch.zeros(3, 4, 4, dtype=torch.uint8))


def _config(root: Path, out: Path, **data) -> object:
    return config_from_dict({
        "model": {"name": "dspose_t"},
        "data": {"kind": "coco", "root": str(root), "train_ann": "annotations/person_keypoints_train.json",
                 "train_images": "images/train", "val_ann": "annotations/person_keypoints_val.json",
                 "val_images": "images/val", **data},
        "optim": {"epochs": 1, "batch_size": 4, "milestones": []},
        "eval": {"every": 1, "batch_size": 8, "flip_test": True},
        "run": {"out_dir": str(out), "seed": 1, "deterministic": True, "device": "cpu", "workers": 0,
                "progress": False, "tensorboard": False, "log_every": 1},
    })


def test_training_on_uint8_samples_is_bit_identical(synthetic_coco, tmp_path):
    runs = {dtype: train(_config(synthetic_coco, tmp_path / dtype, image_dtype=dtype)) for dtype in ("float32", "uint8")}
    losses = {dtype: [r["loss"] for r in read_csv(tmp_path / dtype / "steps.csv")] for dtype in runs}
    assert len(losses["uint8"]) >= 4 and losses["uint8"] == losses["float32"]
    assert runs["uint8"].metrics == runs["float32"].metrics


def test_bad_image_dtype_is_refused_naming_the_key(synthetic_coco, tmp_path):
    with pytest.raises(ValueError, match=r"config data.image_dtype='float16': expected one of float32, uint8"):
        train(_config(synthetic_coco, tmp_path, image_dtype="float16"))
    with pytest.raises(ValueError, match=r"image_dtype must be one of \('float32', 'uint8'\), got 'int8'"):
        build_dataset("coco", synthetic_coco, "val", image_dtype="int8")
