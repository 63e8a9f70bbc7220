"""Bad input: clear errors naming file and record, or documented, counted skips; epochs never die."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from dspose_graph.data import CocoKeypointDataset, load_image
from dspose_graph.topology.schemas import MPII16


@pytest.fixture(scope="module")
def fixture_dir(data_root: Path) -> Path:
    return data_root / "mmpose_fixtures" / "coco"


@pytest.fixture(scope="module")
def coco_json(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "test_coco.json").read_text())


@pytest.fixture()
def image_dir(tmp_path: Path, fixture_dir: Path) -> Path:
    """A writable image folder holding links to the four fixture images."""
    d = tmp_path / "images"
    d.mkdir()
    for jpg in fixture_dir.glob("*.jpg"):
        os.symlink(jpg, d / jpg.name)
    return d


def write(tmp_path: Path, data, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def first_keypoint_ann(data: dict) -> dict:
    return next(a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])


def test_missing_and_corrupt_images(tmp_path, coco_json, image_dir):
    ann = write(tmp_path, coco_json)
    ds = CocoKeypointDataset(ann, image_dir)
    names = sorted({Path(r.image_file).name for r in ds.records})
    (image_dir / names[0]).unlink()
    (image_dir / names[1]).unlink()
    (image_dir / names[1]).write_bytes(b"this is not a jpeg")
    # Evaluation: a missing or corrupt image is an error naming the file and the record.
    bad_first = next(i for i, r in enumerate(ds.records) if Path(r.image_file).name == names[0])
    with pytest.raises(FileNotFoundError, match=rf"ann.json: record {bad_first} .*{names[0]} does not exist"):
        ds[bad_first]
    corrupt = next(i for i, r in enumerate(ds.records) if Path(r.image_file).name == names[1])
    with pytest.raises(ValueError, match=rf"{names[1]} could not be decoded"):
        ds[corrupt]
    # Training: replaced by the next readable sample, deterministically, counted; the epoch completes.
    train = CocoKeypointDataset(ann, image_dir, train=True, seed=0)
    s = train[corrupt]
    assert bool(s["meta"]["replaced"]) and Path(s["meta"]["image_file"]).name not in names[:2]
    assert int(s["meta"]["index"]) == corrupt
    assert train[corrupt]["meta"]["image_file"] == s["meta"]["image_file"]
    # Records are grouped by image: every record of the corrupt image was tried once and counted.
    assert train.bad_images[str(image_dir / names[1])] == sum(Path(r.image_file).name == names[1] for r in train.records)
    batches = list(DataLoader(train, batch_size=4, num_workers=2))
    replaced = sum(int(b["meta"]["replaced"].sum()) for b in batches)
    n_bad = sum(Path(r.image_file).name in names[:2] for r in train.records)
    assert sum(len(b["image"]) for b in batches) == len(train) and replaced == n_bad


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg does not exist"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg could not be decoded"):
        load_image(tmp_path / "empty.jpg")


def test_zero_area_and_out_of_image_boxes_are_skipped(tmp_path, coco_json, fixture_dir):
    data = copy.deepcopy(coco_json)
    ann = first_keypoint_ann(data)
    img = next(i for i in data["images"] if i["id"] == ann["image_id"])
    ann["bbox"] = [10.0, 10.0, 0.0, 50.0]
    second = next(a for a in data["annotations"] if a["num_keypoints"] > 0 and a is not ann and not a["iscrowd"])
    second_img = next(i for i in data["images"] if i["id"] == second["image_id"])
    second["bbox"] = [second_img["width"] + 5.0, 10.0, 40.0, 40.0]
    base = CocoKeypointDataset(fixture_dir / "test_coco.json", fixture_dir)
    ds = CocoKeypointDataset(write(tmp_path, data), fixture_dir)
    assert ds.skipped["zero_area_box"] == 2 and len(ds) == len(base) - 2
    assert img["id"] in ds.coco.imgs


def test_all_keypoints_invisible(tmp_path, coco_json, fixture_dir):
    data = copy.deepcopy(coco_json)
    ann = first_keypoint_ann(data)
    ann["keypoints"] = [0.0] * 51
    ann["num_keypoints"] = 0
    path = write(tmp_path, data)
    base = CocoKeypointDataset(fixture_dir / "test_coco.json", fixture_dir)
    ds = CocoKeypointDataset(path, fixture_dir)
    assert len(ds) == len(base) - 1 and ds.skipped["too_few_keypoints"] == base.skipped["too_few_keypoints"] + 1
    # Kept on request: a valid sample with zero target weights and empty heatmaps.
    kept = CocoKeypointDataset(path, fixture_dir, min_keypoints=0, train=True, seed=0)
    i = next(i for i, r in enumerate(kept.records) if r.ann_id == ann["id"])
    s = kept[i]
    assert not s["target_weight"].any() and not s["heatmap"].any()


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda d, a: a.update(keypoints=a["keypoints"][:48]), ValueError, r"annotation id {id} \(annotations\[\d+\]\): field 'keypoints' must be 51 finite numbers .*got 48 values"),
        (lambda d, a: a["keypoints"].__setitem__(4, float("nan")), ValueError, r"annotation id {id} \(annotations\[\d+\]\): field 'keypoints'\[4\] .*NaN/inf"),
        (lambda d, a: a.update(bbox=[1.0, float("nan"), 3.0, 4.0]), ValueError, r"annotation id {id} \(annotations\[\d+\]\): field 'bbox'\[1\] = nan is NaN/inf"),
        (lambda d, a: a.update(image_id=999999), ValueError, r"annotation id {id} \(annotations\[\d+\]\): field 'image_id' = 999999 is not in 'images'"),
        (lambda d, a: d["images"][0].pop("id"), ValueError, r"images\[0\] must have 'id' and 'file_name'"),
        (lambda d, a: d.update(categories=[{"id": 1, "name": "person"}]), ValueError, r"no entry of 'categories' has a 'keypoints' list"),
    ],
)
def test_structural_errors_name_file_and_record(tmp_path, coco_json, fixture_dir, mutate, error, message):
    data = copy.deepcopy(coco_json)
    ann = first_keypoint_ann(data)
    mutate(data, ann)
    with pytest.raises(error, match=r"ann\.json.*" + message.format(id=ann["id"])):
        CocoKeypointDataset(write(tmp_path, data), fixture_dir)


def test_malformed_files(tmp_path, fixture_dir):
    (tmp_path / "ann.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="ann.json: malformed JSON"):
        CocoKeypointDataset(tmp_path / "ann.json", fixture_dir)
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        CocoKeypointDataset(tmp_path / "missing.json", fixture_dir)
    with pytest.raises(FileNotFoundError, match="image folder .*nowhere does not exist"):
        CocoKeypointDataset(fixture_dir / "test_coco.json", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="17 keypoints but schema 'mpii' has 16"):
        CocoKeypointDataset(fixture_dir / "test_coco.json", fixture_dir, schema=MPII16)


def test_detection_file_errors(tmp_path, fixture_dir):
    dets = json.loads((fixture_dir / "test_coco_det_AP_H_56.json").read_text())
    ann = fixture_dir / "test_coco.json"
    other = [{**d, "category_id": 3} for d in dets]
    with pytest.raises(ValueError, match=r"cars.json: no record has category_id 1 .*found category ids \[3\]"):
        CocoKeypointDataset(ann, fixture_dir, detections=write(tmp_path, other, "cars.json"))
    # A file with all 80 categories (as detectors write them): the others are skipped and counted.
    mixed = dets + other[:10]
    ds = CocoKeypointDataset(ann, fixture_dir, detections=write(tmp_path, mixed, "mixed.json"))
    assert len(ds) == len(dets) and ds.skipped["other_category"] == 10
    unknown = copy.deepcopy(dets)
    unknown[7]["image_id"] = 123
    with pytest.raises(ValueError, match=r"unknown.json: record 7: field 'image_id' = 123 is not in 'images'"):
        CocoKeypointDataset(ann, fixture_dir, detections=write(tmp_path, unknown, "unknown.json"))
    nan = copy.deepcopy(dets)
    nan[3]["bbox"][2] = float("nan")
    with pytest.raises(ValueError, match=r"nan.json: record 3: 'bbox' field 'w' = nan is not a finite"):
        CocoKeypointDataset(ann, fixture_dir, detections=write(tmp_path, nan, "nan.json"))
    with pytest.raises(ValueError, match="dict.json: expected a list of detections"):
        CocoKeypointDataset(ann, fixture_dir, detections=write(tmp_path, {"a": 1}, "dict.json"))


def test_bad_knobs(fixture_dir):
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        CocoKeypointDataset(fixture_dir / "test_coco.json", fixture_dir, on_bad_image="ignore")
    with pytest.raises(ValueError, match="heatmap_size must be"):
        CocoKeypointDataset(fixture_dir / "test_coco.json", fixture_dir, heatmap_size=(48,))
    ds = CocoKeypointDataset(fixture_dir / "test_coco.json", fixture_dir)
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    assert np.isfinite(ds[0]["image"].numpy()).all()
