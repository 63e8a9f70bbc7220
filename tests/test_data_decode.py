"""Reduced-size JPEG decoding gives the crops and targets of the full-size decode.

Tolerances: targets and target weights identical (keypoints stay in full-image coordinates); image crops
(ImageNet-normalised, 1 unit ~ 57 grey levels) within 0.12 mean absolute difference, the difference between
a box-averaged (reduced) source and bilinear sampling of the full image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dspose_graph.data import CropParams, PersonRecord, TopDownDataset, build_dataset
from dspose_graph.data.image import decode_reduction, load_image, reduced_crop_matrix
from dspose_graph.data.synthetic import generate_image
from dspose_graph.data.transforms import box_to_center_scale
from topology.schemas import get_schema

MEAN_ABS = 0.12


def _compare(ds: TopDownDataset, index: int, record: PersonRecord, crop: CropParams, reduction: int) -> float:
    full = ds.make_sample(index, record, load_image(record.image_file), crop)
    small = ds.make_sample(index, record, load_image(record.image_file, reduction), crop, reduction=reduction)
    assert torch.equal(small["heatmap"], full["heatmap"]) and torch.equal(small["target_weight"], full["target_weight"])
    return float((small["image"] - full["image"]).abs().mean())


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[TopDownDataset, PersonRecord]:
    """One generated person in a 768x1024 JPEG, as a one-record dataset at 192x256."""
    image, anns = generate_image(np.random.default_rng(3), (768, 1024))
    path = tmp_path_factory.mktemp("decode") / "person.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    center, scale = box_to_center_scale(anns[0]["bbox"], 192 / 256)
    kp = np.asarray(anns[0]["keypoints"], dtype=np.float64).reshape(-1, 3)
    record = PersonRecord(str(path), 1, 1, center, scale, 1.0, kp)
    return TopDownDataset([record], get_schema("coco"), input_size=(192, 256), heatmap_size=(48, 64)), record


def test_reduction_factor_from_box_and_crop_size():
    assert decode_reduction((192, 256), (192, 256)) == 1
    assert decode_reduction((400, 520), (192, 256)) == 2
    assert decode_reduction((800, 520), (192, 256)) == 2  # the tighter axis decides
    assert decode_reduction((1600, 2100), (192, 256)) == 8
    assert decode_reduction((5000, 9000), (192, 256)) == 8
    assert decode_reduction((400, 520), (192, 256), margin=2.0) == 1
    with pytest.raises(ValueError, match="margin must be > 0"):
        decode_reduction((400, 520), (192, 256), margin=0)


def test_bad_reduction_is_refused(generated):
    _, record = generated
    with pytest.raises(ValueError, match="person.jpg: decode reduction must be one of"):
        load_image(record.image_file, 3)


def test_reduced_decode_of_a_generated_jpeg_matches_the_full_one(generated):
    ds, record = generated
    reduction = decode_reduction(record.scale, ds.input_size)
    assert reduction >= 2
    assert load_image(record.image_file, reduction).shape[:2] == (1024 // reduction, 768 // reduction)
    for crop in (CropParams(record.center, record.scale), CropParams(record.center, record.scale * 1.1, 25.0, True)):
        assert _compare(ds, 0, record, crop, reduction) <= MEAN_ABS
    # The half-pixel offset matters: without it the crop of the reduced image is shifted and further off.
    m = ds.codec.crop_matrix(record.center, record.scale, 0.0, ds.input_size)
    small, full = load_image(record.image_file, reduction), load_image(record.image_file)
    ref = cv2.warpAffine(full, m, ds.input_size, flags=cv2.INTER_LINEAR).astype(np.float64)
    unshifted = m @ np.diag([reduction, reduction, 1.0])
    errors = [np.abs(cv2.warpAffine(small, a, ds.input_size, flags=cv2.INTER_LINEAR) - ref).mean()
              for a in (reduced_crop_matrix(m, reduction), unshifted)]
    assert errors[0] < errors[1]


def test_getitem_uses_the_reduced_decode_only_when_asked(generated):
    ds, record = generated
    full = ds.make_sample(0, record, load_image(record.image_file), CropParams(record.center, record.scale))
    assert torch.equal(ds[0]["image"], full["image"]), "off by default: the official pixels"
    ds.reduced_decode = True
    reduction = decode_reduction(record.scale, ds.input_size)
    expected = ds.make_sample(0, record, load_image(record.image_file, reduction),
                              CropParams(record.center, record.scale), reduction=reduction)
    got = ds[0]
    assert torch.equal(got["image"], expected["image"]) and torch.equal(got["heatmap"], expected["heatmap"])


def test_reduced_decode_on_real_coco_persons(coco_mini: Path):
    ds = build_dataset("coco", coco_mini, "train", train=False)
    checked = 0
    for i, rec in enumerate(ds.records):
        reduction = decode_reduction(rec.scale * 1.3, ds.input_size)  # the larger crops of training
        if reduction > 1:
            crop = CropParams(rec.center, rec.scale * 1.3, 10.0, bool(i % 2))
            assert _compare(ds, i, rec, crop, reduction) <= MEAN_ABS
            checked += 1
    assert checked >= 5


def test_consecutive_persons_of_an_image_decode_it_once(synthetic_coco: Path, monkeypatch):
    """Evaluation order (persons of an image one after another) decodes each image once; the samples equal those
    of a fresh dataset per sample (no re-use), and the shared pixels are read-only."""
    from dspose_graph.data import base

    def val_set() -> TopDownDataset:
        return build_dataset("coco", synthetic_coco, "val", train=False)

    decoded: list[str] = []
    real = base.load_image
    monkeypatch.setattr(base, "load_image", lambda path, reduction=1: decoded.append(path) or real(path, reduction))
    ds = val_set()
    samples = [ds[i] for i in range(len(ds))]
    files = [r.image_file for r in ds.records]
    assert len(set(files)) < len(files)  # several persons per image: the case under test
    assert decoded == [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    assert not ds._decoded[2].flags.writeable
    for i in (0, 1, len(ds) - 1):
        assert torch.equal(samples[i]["image"], val_set()[i]["image"])
    decoded.clear()
    for i in (len(ds) - 1, 0, len(ds) - 1):  # the last image is still held; after another one it is decoded again
        ds[i]
    assert decoded == [files[0], files[-1]]
