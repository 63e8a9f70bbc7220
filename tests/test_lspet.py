"""LSP Extended -> COCO format on the real release in ../shared/data/lspet: golden counts, the conversion
rules, loading through the COCO pipeline and pycocotools, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.formats.coco import load_coco
from dspose_graph.data.lspet import coco_keypoints, joints_box, load_lspet_joints, lspet_to_coco
from dspose_graph.io import read_json
from dspose_graph.topology.schemas import LSP14, get_schema


@pytest.fixture(scope="module")
def lspet(data_root: Path) -> Path:
    return data_root / "lspet"


@pytest.fixture(scope="module")
def converted(lspet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return lspet_to_coco(lspet, tmp_path_factory.mktemp("lspet_coco"), num_val=50)


def test_joints_file_reads_as_images_by_joints(lspet):
    joints = load_lspet_joints(lspet / "joints.mat")
    assert joints.shape == (10000, 14, 3)
    assert set(np.unique(joints[..., 2])) == {0.0, 1.0}


def test_conversion_matches_the_manifest_counts(converted):
    # MANIFEST.md: 3,649 visible joints in the 300 images; 550 of the 551 flagged 0 lie outside the frame.
    anns = [a for split in ("train", "val") for a in read_json(converted[f"{split}_json"])["annotations"]]
    flags = np.concatenate([np.asarray(a["keypoints"]).reshape(14, 3)[:, 2] for a in anns])
    assert len(anns) == 300
    assert (flags == 2).sum() == 3649 and (flags == 0).sum() == 550 and (flags == 1).sum() == 1


def test_split_boxes_and_unlabelled_joints(converted):
    train, val = (read_json(converted[f"{s}_json"]) for s in ("train", "val"))
    assert len(train["images"]) == 250 and len(val["images"]) == 50
    assert {i["file_name"] for i in val["images"]} == {f"im{n:05d}.jpg" for n in range(251, 301)}
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    size = {i["id"]: (i["width"], i["height"]) for i in train["images"] + val["images"]}
    for ann in train["annotations"] + val["annotations"]:
        kp = np.asarray(ann["keypoints"]).reshape(14, 3)
        x, y, w, h = ann["bbox"]
        width, height = size[ann["image_id"]]
        # A few joints flagged visible sit just outside the frame; the box is clipped to the image.
        inside = np.clip(kp[kp[:, 2] > 0, :2], 0, [width - 1, height - 1])
        assert (inside >= [x, y]).all() and (inside <= [x + w, y + h]).all()
        assert (kp[kp[:, 2] == 0, :2] == 0).all()  # COCO writes unlabelled joints as (0, 0, 0)
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum()) and ann["area"] == pytest.approx(w * h)


def test_first_image_golden(lspet, converted):
    raw = load_lspet_joints(lspet / "joints.mat")[0]
    ann = read_json(converted["train_json"])["annotations"][0]
    kp = np.asarray(ann["keypoints"]).reshape(14, 3)
    assert ann["image_id"] == 1
    # im00001's right ankle is flagged 0 and lies outside the image: not labelled.
    assert raw[0, 2] == 0 and kp[0].tolist() == [0, 0, 0]
    np.testing.assert_allclose(kp[1:, :2], raw[1:, :2], atol=1e-3)


def test_loads_through_the_coco_pipeline_with_the_lsp_schema(converted):
    assert get_schema(converted["val_json"]) is LSP14
    ds = CocoKeypointDataset(converted["val_json"], converted["images"], input_size=(96, 128), heatmap_size=(24, 32))
    assert ds.schema is LSP14 and len(ds) == 50
    sample = ds[0]
    assert sample["heatmap"].shape == (14, 32, 24) and sample["image"].shape == (3, 128, 96)
    assert len(load_coco(converted["train_json"]).getAnnIds()) == 250


def test_conversion_rules_on_a_made_up_person():
    joints = np.zeros((14, 3))
    joints[:, :2] = np.arange(28).reshape(14, 2) + 10
    joints[:, 2] = 1
    joints[3, 2] = 0                        # occluded, inside the image -> v = 1
    joints[4] = [-5, 20, 0]                 # outside, flag 0 -> unlabelled
    kp = coco_keypoints(joints, width=100, height=100)
    assert kp[3, 2] == 1 and kp[4].tolist() == [0, 0, 0] and kp[0, 2] == 2
    box = joints_box(kp, 100, 100, margin=0.1)
    labelled = kp[kp[:, 2] > 0, :2]
    span = labelled.max(0) - labelled.min(0)
    np.testing.assert_allclose(box[:2], labelled.min(0) - 0.1 * span)
    assert joints_box(kp[:1], 100, 100) is None  # one joint gives no box


def test_bad_input_names_the_file_and_writes_nothing(tmp_path, lspet):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="joints.mat"):
        lspet_to_coco(tmp_path / "nowhere", out)
    root = tmp_path / "lsp"
    (root / "images").mkdir(parents=True)
    scipy.io.savemat(root / "joints.mat", {"joints": np.zeros((3, 14, 5))})
    with pytest.raises(ValueError, match=r"joints.mat: field 'joints' has shape \(3, 14, 5\)"):
        lspet_to_coco(root, out)
    bad = np.zeros((14, 3, 5))
    bad[2, 2, 3] = 2
    scipy.io.savemat(root / "joints.mat", {"joints": bad})
    with pytest.raises(ValueError, match="image 4 has a visibility flag"):
        lspet_to_coco(root, out)
    scipy.io.savemat(root / "joints.mat", {"other": bad})
    with pytest.raises(ValueError, match="no variable 'joints'"):
        lspet_to_coco(root, out)
    shutil.copy(lspet / "joints.mat", root / "joints.mat")
    for n in (1, 2):
        shutil.copy(lspet / "images" / f"im{n:05d}.jpg", root / "images")
    with pytest.raises(ValueError, match="2 LSPET images found; need more than num_val=50"):
        lspet_to_coco(root, out)
    (root / "images" / "im00003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="im00003.jpg: cannot read the image header"):
        lspet_to_coco(root, out, num_val=1)
    assert not out.exists() or not any(out.rglob("*.json"))
