"""Predictor and ``dspose predict`` on real COCO / LSPET images: geometry, batching, outputs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dspose_graph.cli.main import main
from dspose_graph.data import load_image
from dspose_graph.predict import Predictor
from dspose_graph.topology.schemas import COCO17


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "dspose_t.pt")


@pytest.fixture(scope="module")
def mpii_ckpt(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "dspose_t_mpii.pt", schema="mpii")


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return Predictor(ckpt)


@pytest.fixture(scope="module")
def fixture_images(data_root) -> Path:
    return data_root / "mmpose_fixtures" / "coco"


def test_whole_image_is_one_person(ckpt, coco_mini):
    # argmax decoding: DARK's Taylor step is unbounded on the non-Gaussian maps of an untrained model.
    predictor = Predictor(ckpt, decode="argmax")
    path = coco_mini / "images" / "val" / "000000000139.jpg"
    image = load_image(path)
    h, w = image.shape[:2]
    (person,) = predictor.predict(path)
    assert person["box"] == [0.0, 0.0, float(w), float(h)]
    kp = person["keypoints"]
    assert kp.shape == (17, 3) and kp.dtype == np.float32 and np.isfinite(kp).all()
    # Keypoints come back inside the padded crop (1.25 x the box, at the model's aspect ratio), give or take
    # argmax's quarter-pixel step: the TokenPose codec puts the border heatmap pixels on the crop's edges.
    aspect = predictor.input_size[0] / predictor.input_size[1]
    cw, ch = max(w, h * aspect) * 1.25, max(h, w / aspect) * 1.25
    tx, ty = (0.25 * c / (n - 1) + 1e-3 for c, n in zip((cw, ch), predictor.heatmap_size))
    assert (np.abs(kp[:, 0] - w / 2) <= cw / 2 + tx).all() and (np.abs(kp[:, 1] - h / 2) <= ch / 2 + ty).all()
    # Same result from an array as from the path.
    (again,) = predictor.predict(image)
    np.testing.assert_array_equal(again["keypoints"], kp)


def test_back_projection_follows_the_box(predictor, data_root):
    """Padding the image and shifting the box by the same pixels gives the same crop: keypoints shift exactly."""
    image = load_image(data_root / "lspet" / "images" / "im00001.jpg")
    dx, dy = 37, 11
    padded = np.zeros((image.shape[0] + dy, image.shape[1] + dx, 3), np.uint8)
    padded[dy:, dx:] = image
    box = [5.0, 8.0, image.shape[1] - 20.0, image.shape[0] - 12.0]
    (a,) = predictor.predict(image, [box])
    (b,) = predictor.predict(padded, [[box[0] + dx, box[1] + dy, box[2], box[3]]])
    np.testing.assert_allclose(b["keypoints"][:, :2] - a["keypoints"][:, :2], np.tile([dx, dy], (17, 1)), atol=1e-3)
    np.testing.assert_allclose(b["keypoints"][:, 2], a["keypoints"][:, 2], atol=1e-5)


def test_batched_equals_one_by_one_and_scores(ckpt, fixture_images):
    path = fixture_images / "000000197388.jpg"
    boxes = [[100.0, 50.0, 120.0, 260.0], [10.0, 10.0, 60.0, 90.0], [200.0, 80.0, 90.0, 200.0]]
    batched = Predictor(ckpt).predict(path, boxes, [1.0, 0.5, 0.25])
    single = Predictor(ckpt, batch_size=1).predict(path, boxes, [1.0, 0.5, 0.25])
    for a, b, box in zip(batched, single, boxes):
        assert a["box"] == box
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-3)
    # Person score = box score x mean keypoint confidence above 0.2.
    for person, box_score in zip(batched, [1.0, 0.5, 0.25]):
        conf = person["keypoints"][:, 2]
        expected = box_score * (conf[conf > 0.2].mean() if (conf > 0.2).any() else 0.0)
        assert person["score"] == pytest.approx(float(expected), rel=1e-5)
    assert Predictor(ckpt).predict(path, []) == []


def test_flip_test_changes_and_averages(ckpt, fixture_images):
    path = fixture_images / "000000000785.jpg"
    with_flip = Predictor(ckpt, flip_test=True)
    without = Predictor(ckpt, flip_test=False)
    crops, _, _ = with_flip.crop(load_image(path), np.array([[280.0, 40.0, 200.0, 380.0]]))
    hm = with_flip.heatmaps(crops)
    from dspose_graph.eval.decode import flip_back

    with torch.no_grad():
        plain = without.model(crops)
        mirrored = without.model(torch.flip(crops, dims=[3]))
    # The checkpoint's codec (the default, TokenPose's) maps mirrored heatmaps back without HRNet's shift.
    assert with_flip.codec.name == "tokenpose" and not with_flip.codec.flip_shift
    expected = (plain + flip_back(mirrored, COCO17.flip_index, shift=False)) / 2
    torch.testing.assert_close(hm, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(without.heatmaps(crops), plain, atol=1e-6, rtol=1e-6)


def test_predictor_bad_input(predictor, ckpt, mpii_ckpt, tmp_path):
    with pytest.raises(ValueError, match="RGB uint8"):
        predictor.predict(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="positive w and h"):
        predictor.predict(np.zeros((50, 50, 3), np.uint8), [[0, 0, 0, 10]])
    with pytest.raises(ValueError, match=r"list of \[x, y, w, h\]"):
        predictor.predict(np.zeros((50, 50, 3), np.uint8), [[0, 0, 10]])
    with pytest.raises(ValueError, match="2 box scores for 1 boxes"):
        predictor.predict(np.zeros((50, 50, 3), np.uint8), [[0, 0, 10, 10]], [0.5, 0.4])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predictor.predict(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="'mpii' skeleton"):
        Predictor(mpii_ckpt, expected_schema=COCO17)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.pt"):
        Predictor(truncated)
    # Weights of a 16-keypoint model under a 17-keypoint config: the loader names the file.
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"] = torch.load(mpii_ckpt, weights_only=True)["state_dict"]
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="mixed.pt"):
        Predictor(tmp_path / "mixed.pt")


def test_package_level_api(ckpt):
    import dspose_graph

    assert dspose_graph.Predictor is Predictor


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_folder_with_a_bad_file(ckpt, coco_mini, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("000000000139.jpg", "000000000802.jpg"):
        shutil.copy(coco_mini / "images" / "val" / name, folder / name)
    (folder / "000000000001.jpg").write_bytes(b"not a jpeg at all")
    rc, out, err = _run(capsys, "predict", "--weights", str(ckpt), "--images", str(folder), "--out", str(tmp_path / "out"),
                        "--no-flip")
    assert rc == 0
    assert "000000000001.jpg" in err and "skipped 1" in err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(r["image_id"] for r in results) == [139, 802]
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)
    for name in ("000000000139.jpg", "000000000802.jpg"):
        drawn = load_image(tmp_path / "out" / "images" / name)
        assert drawn.shape == load_image(folder / name).shape
    assert not (tmp_path / "out" / "images" / "000000000001.jpg").exists()
    # The results load as COCO results against the real annotations.
    from pycocotools.coco import COCO

    gt = COCO(str(coco_mini / "annotations" / "person_keypoints_val.json"))
    assert len(gt.loadRes(str(tmp_path / "out" / "results.json")).anns) == 2


def test_cli_detection_boxes(ckpt, fixture_images, tmp_path, capsys):
    dets = json.loads((fixture_images / "test_coco_det_AP_H_56.json").read_text())
    thr = 0.3
    expected = sum(1 for d in dets if d.get("category_id", 1) == 1 and d["score"] >= thr and d["bbox"][2] > 0 and d["bbox"][3] > 0)
    rc, out, _ = _run(capsys, "predict", "--weights", str(ckpt), "--images", str(fixture_images), "--boxes",
                      str(fixture_images / "test_coco_det_AP_H_56.json"), "--det-thr", str(thr),
                      "--out", str(tmp_path / "o"), "--no-flip")
    assert rc == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(results) == expected
    by_image = {d["image_id"] for d in dets if d["score"] >= thr}
    assert {r["image_id"] for r in results} == by_image


def test_cli_boxes_for_missing_images(ckpt, fixture_images, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(fixture_images / "000000000785.jpg", one)
    args = ["predict", "--weights", str(ckpt), "--images", str(one), "--boxes",
            str(fixture_images / "test_coco_det_AP_H_56.json"), "--out", str(tmp_path / "o"), "--no-flip"]
    rc, _, err = _run(capsys, *args)
    assert rc == 2 and "not among the inputs" in err and "--ignore-missing" in err
    rc, _, _ = _run(capsys, *args, "--ignore-missing")
    assert rc == 0
    assert {r["image_id"] for r in json.loads((tmp_path / "o" / "results.json").read_text())} == {785}


def test_cli_weights_for_another_skeleton(mpii_ckpt, fixture_images, tmp_path, capsys):
    rc, _, err = _run(capsys, "predict", "--weights", str(mpii_ckpt), "--images", str(fixture_images),
                      "--boxes", str(fixture_images / "test_coco.json"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "'mpii' skeleton" in err and "'coco'" in err


def test_cli_empty_folder_and_unreadable_inputs(ckpt, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, "predict", "--weights", str(ckpt), "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "contains no images" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    rc, _, err = _run(capsys, "predict", "--weights", str(ckpt), "--images", str(bad), "--out", str(tmp_path / "o"))
    assert rc == 2 and "could be read" in err and "bad.png" in err
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 2048)
    rc, _, err = _run(capsys, "predict", "--weights", str(ckpt), "--video", str(video), "--out", str(tmp_path / "o"))
    assert rc == 2 and "clip.mp4" in err and "cannot read" in err
    rc, _, err = _run(capsys, "predict", "--weights", str(ckpt), "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "none.mp4" in err


def test_cli_video(ckpt, data_root, tmp_path, capsys):
    frames = [load_image(data_root / "lspet" / "images" / f"im0000{i}.jpg") for i in (1, 2, 3)]
    size = (160, 200)  # (w, h)
    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, size)
    for f in frames:
        writer.write(cv2.cvtColor(cv2.resize(f, size), cv2.COLOR_RGB2BGR))
    writer.release()
    rc, out, _ = _run(capsys, "predict", "--weights", str(ckpt), "--video", str(video), "--out", str(tmp_path / "o"), "--no-flip")
    assert rc == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["image_id"] for r in results] == [0, 1, 2]
    assert all(r["bbox"] == [0.0, 0.0, 160.0, 200.0] for r in results)
    cap = cv2.VideoCapture(str(tmp_path / "o" / "walk_pose.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 3
    assert not list((tmp_path / "o").glob(".*partial*"))


def test_cli_file_name_mapping(ckpt, coco_mini, tmp_path, capsys):
    """Detections by image_id reach files with arbitrary names through --coco-json; 'file_name' works too."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(coco_mini / "images" / "val" / "000000000139.jpg", folder / "kitchen.jpg")
    shutil.copy(coco_mini / "images" / "val" / "000000000802.jpg", folder / "fridge.jpg")
    mapping = tmp_path / "images.json"
    mapping.write_text(json.dumps({"images": [{"id": 42, "file_name": "some/dir/kitchen.jpg"},
                                              {"id": 7, "file_name": "fridge.jpg"}]}))
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([
        {"image_id": 42, "bbox": [10, 20, 100, 200], "score": 0.9, "category_id": 1},
        {"image_id": 42, "bbox": [5, 5, 50, 50], "score": 0.8, "category_id": 3},  # not a person: ignored
        {"file_name": "fridge.jpg", "bbox": [30, 40, 60, 150], "score": 0.7},
    ]))
    rc, _, _ = _run(capsys, "predict", "--weights", str(ckpt), "--images", str(folder), "--boxes", str(dets),
                    "--coco-json", str(mapping), "--out", str(tmp_path / "o"), "--no-flip")
    assert rc == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert sorted((r["image_id"], r["file_name"], tuple(r["bbox"])) for r in results) == [
        (7, "fridge.jpg", (30.0, 40.0, 60.0, 150.0)), (42, "kitchen.jpg", (10.0, 20.0, 100.0, 200.0))]
    dets.write_text(json.dumps([{"image_id": 42, "bbox": [10, 20]}]))
    rc, _, err = _run(capsys, "predict", "--weights", str(ckpt), "--images", str(folder), "--boxes", str(dets),
                      "--out", str(tmp_path / "o"))
    assert rc == 2 and "dets.json" in err and "[x, y, w, h]" in err
