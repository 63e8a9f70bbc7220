"""COCO-format datasets on real data: sample contract, geometry of warp + targets, flip, detections, workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dspose_graph.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    CocoKeypointDataset,
    CropParams,
    build_dataset,
    load_image,
    warp_image,
)
from dspose_graph.data.augment import transform_keypoints
from topology.schemas import COCO17


@pytest.fixture(scope="module")
def fixtures(data_root: Path) -> Path:
    return data_root / "mmpose_fixtures" / "coco"


@pytest.fixture(scope="module")
def train_set(coco_mini: Path) -> CocoKeypointDataset:
    return build_dataset("coco", coco_mini, "val", train=True, seed=0)


def expected_heatmap_joints(ds, record, meta) -> np.ndarray:
    """Where the joints of ``record`` must land on the heatmap, from the crop the sample reports."""
    m = ds.codec.crop_matrix(meta["center"].numpy(), meta["scale"].numpy(), float(meta["rotation"]), ds.input_size,
                             flip=bool(meta["flip"]))
    kp = transform_keypoints(record.keypoints, m, ds.schema.flip_index if bool(meta["flip"]) else None)
    return ds.codec.joints_to_heatmap(kp[:, :2], ds.input_size, ds.heatmap_size)


def test_sample_contract(train_set):
    s = train_set[3]
    assert s["image"].shape == (3, 256, 192) and s["image"].dtype == torch.float32
    assert s["heatmap"].shape == (17, 64, 48) and s["heatmap"].dtype == torch.float32
    assert s["target_weight"].shape == (17,) and s["target_weight"].dtype == torch.float32
    meta = s["meta"]
    assert meta["center"].dtype == torch.float64 and meta["center"].shape == (2,)
    assert meta["scale"].dtype == torch.float64 and meta["scale"].shape == (2,)
    assert meta["keypoints"].shape == (17, 3) and meta["keypoints"].dtype == torch.float32
    assert int(meta["index"]) == 3 and float(meta["score"]) == 1.0 and int(meta["ann_id"]) > 0
    assert Path(meta["image_file"]).is_file()
    assert train_set.schema is COCO17
    # Counts of coco_mini val: 118 person anns, 68 with keypoints, one of them crowd.
    assert len(train_set) == 68 and train_set.skipped == {"too_few_keypoints": 49, "crowd": 1}


def test_eval_crop_is_the_padded_box_and_normalised(coco_mini):
    ds = build_dataset("coco", coco_mini, "val")
    s, rec = ds[0], ds.records[0]
    ann = ds.coco.anns[rec.ann_id]
    x, y, w, h = ann["bbox"]
    np.testing.assert_allclose(s["meta"]["center"].numpy(), [x + w / 2, y + h / 2], atol=0.5)
    sw, sh = s["meta"]["scale"].numpy()
    assert sw / sh == pytest.approx(192 / 256) and sh >= 1.25 * (h - 1) - 1e-6
    assert float(s["meta"]["rotation"]) == 0.0 and not bool(s["meta"]["flip"])
    raw = warp_image(load_image(rec.image_file), rec.center, rec.scale, 0.0, (192, 256))
    np.testing.assert_allclose(s["image"].numpy(), ((raw / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1), atol=1e-5)


@pytest.mark.parametrize("codec", ["hrnet", "udp", "tokenpose"])
def test_heatmap_peak_is_the_warped_joint(coco_mini, codec):
    ds = build_dataset("coco", coco_mini, "val", train=True, seed=1, codec=codec)
    checked = 0
    for i in range(0, len(ds), 3):
        s = ds[i]
        expected = expected_heatmap_joints(ds, ds.records[i], s["meta"])
        heat = s["heatmap"].numpy()
        for k in np.flatnonzero(s["target_weight"].numpy()):
            ex, ey = expected[k]
            if not (0 <= round(ex) < 48 and 0 <= round(ey) < 64):
                continue
            py, px = np.unravel_index(heat[k].argmax(), heat[k].shape)
            assert abs(px - ex) <= 1.0 and abs(py - ey) <= 1.0, (i, k, (px, py), (ex, ey))
            checked += 1
    assert checked > 200


def test_target_weight_follows_visibility(fixtures):
    ds = CocoKeypointDataset(fixtures / "test_coco.json", fixtures)
    for i in range(len(ds)):
        s = ds[i]
        v = s["meta"]["keypoints"][:, 2].numpy()
        w = s["target_weight"].numpy()
        # Evaluation crop = padded box: every labelled joint is inside it, so weight == labelled.
        np.testing.assert_array_equal(w, (v > 0).astype(np.float32))
        assert not s["heatmap"][w == 0].any()


def test_image_and_keypoints_move_together(fixtures):
    """Paint a blob at one joint; after scale+rotation+flip the blob is where the flipped joint lands."""
    ds = CocoKeypointDataset(fixtures / "test_coco.json", fixtures, train=True)
    rec = ds.records[0]
    image = load_image(rec.image_file)
    crop = CropParams(center=rec.center + [7.0, -5.0], scale=rec.scale * 0.9, rotation=30.0, flip=True)
    for k in np.flatnonzero(rec.keypoints[:, 2] > 0)[:4]:
        canvas = np.zeros_like(image)
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        x, y = rec.keypoints[k, :2]
        canvas[(xx - x) ** 2 + (yy - y) ** 2 <= 9] = 255
        s = ds.make_sample(0, rec, canvas, crop)
        blob = s["image"][0].numpy() > s["image"][0].numpy().min() + 1.0
        by, bx = np.argwhere(blob).mean(axis=0)
        m = ds.codec.crop_matrix(crop.center, crop.scale, crop.rotation, ds.input_size, flip=True)
        kp = transform_keypoints(rec.keypoints, m, ds.schema.flip_index)
        # Joint k is now labelled with its mirror name.
        mirrored = int(ds.schema.flip_index[k])
        assert abs(kp[mirrored, 0] - bx) < 0.75 and abs(kp[mirrored, 1] - by) < 0.75


@pytest.mark.parametrize("codec", ["hrnet", "udp", "tokenpose"])
def test_flip_consistency(fixtures, codec):
    ds = CocoKeypointDataset(fixtures / "test_coco.json", fixtures, train=True, codec=codec)
    exact = codec != "hrnet"  # UDP and TokenPose mirror about the centre of the pixel grid
    rec = ds.records[1]
    image = load_image(rec.image_file)
    plain = ds.make_sample(1, rec, image, CropParams(rec.center, rec.scale, 12.0, False))
    flipped = ds.make_sample(1, rec, image, CropParams(rec.center, rec.scale, 12.0, True))
    fi = COCO17.flip_index
    # Targets: the flipped sample's heatmap k is the mirrored heatmap of joint flip_index[k].
    w_plain, w_flip = plain["target_weight"].numpy(), flipped["target_weight"].numpy()
    np.testing.assert_array_equal(w_flip, w_plain[fi])
    cx = (ds.heatmap_size[0] - 1) / 2 if exact else ds.heatmap_size[0] / 2
    m = ds.codec.crop_matrix(rec.center, rec.scale, 12.0, ds.input_size)
    j_plain = ds.codec.joints_to_heatmap(transform_keypoints(rec.keypoints, m)[:, :2], ds.input_size, ds.heatmap_size)
    mf = ds.codec.crop_matrix(rec.center, rec.scale, 12.0, ds.input_size, flip=True)
    j_flip = ds.codec.joints_to_heatmap(transform_keypoints(rec.keypoints, mf, fi)[:, :2], ds.input_size, ds.heatmap_size)
    np.testing.assert_allclose(j_flip[:, 0], 2 * cx - j_plain[fi, 0], atol=1e-9)
    np.testing.assert_allclose(j_flip[:, 1], j_plain[fi, 1], atol=1e-9)
    if exact:
        # The mirror axis is the centre of the pixel grid: the flipped crop is the array mirrored.
        mirrored = plain["image"].numpy()[:, :, ::-1]
        assert np.abs(flipped["image"].numpy() - mirrored).mean() < 0.05
        np.testing.assert_allclose(flipped["heatmap"].numpy(), plain["heatmap"].numpy()[fi][:, :, ::-1], atol=1e-5)


def test_detection_boxes(fixtures):
    dets = fixtures / "test_coco_det_AP_H_56.json"
    ds = CocoKeypointDataset(fixtures / "test_coco.json", fixtures, detections=dets)
    assert len(ds) == 118
    s = ds[0]
    assert int(s["meta"]["ann_id"]) == -1 and 0 < float(s["meta"]["score"]) <= 1
    assert not s["meta"]["keypoints"].any() and not s["target_weight"].any()
    high = CocoKeypointDataset(fixtures / "test_coco.json", fixtures, detections=dets, det_score_thr=0.5)
    scores = [d["score"] for d in json.loads(dets.read_text())]
    assert len(high) == sum(sc >= 0.5 for sc in scores) and high.skipped["low_score"] == sum(sc < 0.5 for sc in scores)


def test_dataloader_two_workers(train_set):
    loader = DataLoader(train_set, batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["image"]) for b in batches) == len(train_set)
    b = batches[0]
    assert b["image"].shape == (8, 3, 256, 192) and b["heatmap"].shape == (8, 17, 64, 48)
    assert b["meta"]["center"].shape == (8, 2) and len(b["meta"]["image_file"]) == 8
    # seed=0: augmentation is a function of (seed, epoch, index), identical to the main process.
    np.testing.assert_array_equal(b["heatmap"][5].numpy(), train_set[5]["heatmap"].numpy())
    # Without a seed each worker draws from its own torch generator: no two samples share a crop.
    unseeded = build_dataset("coco", Path(train_set.source).parent.parent, "val", train=True)
    widths = torch.cat([b["meta"]["scale"][:, 0] for b in DataLoader(unseeded, batch_size=8, num_workers=2)])
    assert len(torch.unique(widths)) == len(unseeded)


def test_set_epoch_changes_seeded_augmentation(train_set):
    a = train_set[2]["meta"]["scale"].clone()
    train_set.set_epoch(1)
    try:
        b = train_set[2]["meta"]["scale"]
    finally:
        train_set.set_epoch(0)
    assert not torch.equal(a, b) and torch.equal(a, train_set[2]["meta"]["scale"])


def test_augmentation_ranges(train_set):
    params = AugmentParams()
    ds = build_dataset("coco", Path(train_set.source).parent.parent, "val", train=True, seed=3,
                       augment=AugmentParams(half_body_prob=0.0))
    rot, ratio, flips = [], [], []
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            rot.append(float(s["meta"]["rotation"]))
            ratio.append(float(s["meta"]["scale"][1] / ds.records[i].scale[1]))
            flips.append(bool(s["meta"]["flip"]))
    rot, ratio = np.array(rot), np.array(ratio)
    # Official TokenPose: N(0, 45 deg) clipped at +-90 deg, with probability 0.6.
    assert np.abs(rot).max() <= 2 * params.rotation_factor and 0.5 < (rot != 0).mean() < 0.7
    assert np.abs(rot).max() > params.rotation_factor
    assert ratio.min() >= 0.65 - 1e-9 and ratio.max() <= 1.35 + 1e-9
    assert 0.4 < np.mean(flips) < 0.6


def test_half_body_crop_is_smaller(coco_mini):
    ds = build_dataset("coco", coco_mini, "val", train=True, seed=0,
                       augment=AugmentParams(half_body_prob=1.0, scale_factor=0.0, rotation_prob=0.0, flip_prob=0.0))
    changed = 0
    for i, rec in enumerate(ds.records):
        s = ds[i]
        vis = rec.keypoints[:, 2] > 0
        if vis.sum() > 8:
            upper = np.zeros(17, dtype=bool)
            upper[list(ds.schema.upper_body)] = True
            halves = [rec.keypoints[vis & upper, :2], rec.keypoints[vis & ~upper, :2]]
            center = s["meta"]["center"].numpy()
            # HRNet's half-body crop: centred on the mean of one half's visible joints, all of them inside.
            half = next(h for h in halves if len(h) >= 2 and np.allclose(h.mean(axis=0), center))
            assert np.all(np.abs(half - center) <= s["meta"]["scale"].numpy() / 2)
            changed += 1
        else:
            np.testing.assert_allclose(s["meta"]["center"].numpy(), rec.center)
    assert changed > 10


def test_build_dataset_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="person_keypoints_val2017.json"):
        build_dataset("coco", tmp_path, "val")
    with pytest.raises(ValueError, match="unknown dataset kind 'lsp'"):
        build_dataset("lsp", tmp_path, "val")


def test_build_dataset_official_coco2017_layout(tmp_path, coco_mini):
    """ROOT/annotations/person_keypoints_val2017.json + ROOT/val2017 + HRNet's detection file name."""
    (tmp_path / "annotations").mkdir()
    os.symlink(coco_mini / "annotations" / "person_keypoints_val.json", tmp_path / "annotations" / "person_keypoints_val2017.json")
    os.symlink(coco_mini / "images" / "val", tmp_path / "val2017")
    gt = build_dataset("coco", tmp_path, "val")
    assert len(gt) == 68 and Path(gt.records[0].image_file).parent.name == "val2017"
    with pytest.raises(FileNotFoundError, match="COCO_val2017_detections_AP_H_56_person.json"):
        build_dataset("coco", tmp_path, "val", detections="default")
    # Detector-style boxes: every ground-truth person box, score from its keypoint count.
    anns = [a for a in gt.coco.dataset["annotations"] if not a["iscrowd"]]
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": min(1.0, 0.05 * a["num_keypoints"])}
            for a in anns]
    (tmp_path / "person_detection_results").mkdir()
    (tmp_path / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json").write_text(json.dumps(dets))
    det = build_dataset("coco", tmp_path, "val", detections="default", det_score_thr=0.01)
    assert len(det) + det.skipped["low_score"] + det.skipped["zero_area_box"] == len(dets)
    assert det.skipped["low_score"] == sum(d["score"] < 0.01 for d in dets)
    assert {int(det[i]["meta"]["ann_id"]) for i in range(3)} == {-1}
