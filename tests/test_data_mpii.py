"""MPII on the real annotation file, with the five val images of the mmpose fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from torch.utils.data import DataLoader

from dspose_graph.data import MPIIDataset, build_dataset
from dspose_graph.data.augment import transform_keypoints
from dspose_graph.data.mpii import MPII_INDEX_BASE, mpii_center_scale
from topology.schemas import MPII16


@pytest.fixture(scope="module")
def mpii_fixture(data_root: Path) -> list[dict]:
    return json.loads((data_root / "mmpose_fixtures" / "mpii" / "test_mpii.json").read_text())


@pytest.fixture(scope="module")
def mpii_root(tmp_path_factory, data_root: Path, mpii_annotations: Path) -> Path:
    """The official layout (ROOT/images, ROOT/annotations) with the five fixture images linked in."""
    root = tmp_path_factory.mktemp("mpii")
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    for jpg in sorted((data_root / "mmpose_fixtures" / "mpii").glob("*.jpg")):
        os.symlink(jpg, root / "images" / jpg.name)
    os.symlink(mpii_annotations, root / "annotations" / mpii_annotations.name)
    return root


@pytest.fixture(scope="module")
def val_set(mpii_root: Path) -> MPIIDataset:
    return build_dataset("mpii", mpii_root, "val")


def fixture_indices(ds: MPIIDataset, fixture: list[dict]) -> list[int]:
    names = [Path(r.image_file).name for r in ds.records]
    return [names.index(f["image"]) for f in fixture]


def test_splits_and_alignment_with_the_pckh_ground_truth(val_set, mpii_root, data_root):
    assert len(val_set) == 2958 and val_set.schema is MPII16
    assert val_set.input_size == (256, 256) and val_set.heatmap_size == (64, 64)
    gt = scipy.io.loadmat(data_root / "mpii" / "detections_our_format.mat")
    pos = gt["pos_gt_src"].transpose(2, 0, 1)
    missing = gt["jnt_missing"].T.astype(bool)
    kps = np.stack([r.keypoints for r in val_set.records])
    # Sample i is column i of the toolkit's ground truth; "not annotated" is exactly jnt_missing.
    np.testing.assert_array_equal(kps[:, :, 2] == 0, missing)
    # Samples are 0-based; the toolkit's ground truth is MATLAB's 1-based frame.
    close = np.abs(kps[:, :, :2] + MPII_INDEX_BASE - pos).max(axis=-1) < 1e-3
    assert close[~missing].mean() > 0.999
    train = build_dataset("mpii", mpii_root, "train")
    assert len(train) + train.skipped["no_annotated_joint"] == 22246


def test_center_scale_conversion():
    center, scale = mpii_center_scale([966.0, 340.0], 4.718, aspect_ratio=1.0)
    np.testing.assert_allclose(center, [966.0, 340.0 + 15 * 4.718])
    np.testing.assert_allclose(scale, [200 * 4.718 * 1.25] * 2)
    _, scale = mpii_center_scale([0, 0], 2.0, aspect_ratio=0.75)
    np.testing.assert_allclose(scale, [375.0, 500.0])


def test_target_weight_is_annotated_as_in_hrnet_files(val_set, mpii_fixture):
    for i, f in zip(fixture_indices(val_set, mpii_fixture), mpii_fixture):
        s = val_set[i]
        # HRNet's own MPII files (mmpose fixture) weight every annotated joint, occluded ones too.
        np.testing.assert_array_equal(s["target_weight"].numpy(), np.asarray(f["joints_vis"], dtype=np.float32))
        annotated = np.asarray(f["joints_vis"], dtype=bool)  # HRNet files write -1, -1 for the others
        np.testing.assert_allclose(s["meta"]["keypoints"][annotated, :2].numpy() + 1, np.asarray(f["joints"])[annotated], atol=1e-3)
        np.testing.assert_allclose(s["meta"]["center"].numpy()[0] + 1, f["center"][0])
        assert not s["meta"]["keypoints"][~annotated].any()


def test_mpii_samples_through_two_workers(mpii_root, mpii_fixture):
    ds = build_dataset("mpii", mpii_root, "val", train=True, seed=0)
    idx = fixture_indices(ds, mpii_fixture)
    subset = DataLoader(ds, batch_size=5, num_workers=2, sampler=idx)
    batch = next(iter(subset))
    assert batch["image"].shape == (5, 3, 256, 256) and batch["heatmap"].shape == (5, 16, 64, 64)
    assert not batch["meta"]["replaced"].any()
    for b, i in enumerate(idx):
        meta = {k: v[b] for k, v in batch["meta"].items() if k != "image_file"}
        m = ds.codec.crop_matrix(meta["center"].numpy(), meta["scale"].numpy(), float(meta["rotation"]),
                                 ds.input_size, flip=bool(meta["flip"]))
        kp = transform_keypoints(ds.records[i].keypoints, m, MPII16.flip_index if bool(meta["flip"]) else None)
        hm = ds.codec.joints_to_heatmap(kp[:, :2], ds.input_size, ds.heatmap_size)
        heat = batch["heatmap"][b].numpy()
        for k in np.flatnonzero(batch["target_weight"][b].numpy()):
            if 0 <= round(hm[k, 0]) < 64 and 0 <= round(hm[k, 1]) < 64:
                py, px = np.unravel_index(heat[k].argmax(), heat[k].shape)
                assert abs(px - hm[k, 0]) <= 1 and abs(py - hm[k, 1]) <= 1


def test_val_raises_on_a_missing_image_naming_it(val_set, mpii_fixture):
    other = next(i for i, r in enumerate(val_set.records) if Path(r.image_file).name not in {f["image"] for f in mpii_fixture})
    with pytest.raises(FileNotFoundError, match=Path(val_set.records[other].image_file).name):
        val_set[other]


def test_mpii_bad_annotations(tmp_path, mpii_root):
    good = {"img_paths": "a.jpg", "objpos": [10.0, 20.0], "scale_provided": 1.0, "isValidation": 0.0,
            "joint_self": [[1.0, 2.0, 1.0]] * 16, "annolist_index": 1.0}
    cases = {
        "joint_self": ({**good, "joint_self": [[1.0, 2.0, 1.0]] * 15}, r"record 1: 'joint_self' has shape \(15, 3\)"),
        "nan": ({**good, "objpos": [float("nan"), 1.0]}, "record 1: .*NaN"),
        "scale": ({**good, "scale_provided": 0.0}, "record 1: 'scale_provided' must be positive"),
        "field": ({k: v for k, v in good.items() if k != "objpos"}, r"record 1: missing field\(s\) \['objpos'\]"),
    }
    for name, (bad, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([good, bad]))
        with pytest.raises(ValueError, match=message):
            MPIIDataset(path, mpii_root / "images")
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="broken.json.gz"):
        MPIIDataset(broken, mpii_root / "images")
    with pytest.raises(ValueError, match="split must be one of"):
        MPIIDataset(tmp_path / "x.json", mpii_root / "images", split="test")
    with pytest.raises(FileNotFoundError, match="no MPII annotation file"):
        build_dataset("mpii", tmp_path, "val")
