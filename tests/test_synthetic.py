"""The synthetic COCO-17 dataset: determinism, COCO validity, visibility semantics, sides, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from dspose_graph.data import synthetic, synthetic_render
from dspose_graph.data.synthetic import generate_dataset, generate_image, project_person, sample_body
from dspose_graph.data.synthetic_render import render_image
from dspose_graph.topology.schemas import COCO17

SIZE = (128, 160)
I = {n: i for i, n in enumerate(COCO17.keypoints)}
# COCO's official 1-based person skeleton (cocodataset.org person_keypoints annotations).
COCO_SKELETON_1 = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
                   [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    return generate_dataset(tmp_path_factory.mktemp("synth") / "ds", 24, 6, image_size=SIZE, seed=3, persons_per_image=(1, 3))


def _without_date(path: Path) -> dict:
    data = json.loads(path.read_text())
    del data["info"]["provenance"]["created"]
    return data


def _keypoints(ann: dict) -> np.ndarray:
    return np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, dataset):
    again = generate_dataset(tmp_path / "again", 24, 6, image_size=SIZE, seed=3, persons_per_image=(1, 3))
    for split in ("train", "val"):
        assert _without_date(again[f"{split}_json"]) == _without_date(dataset[f"{split}_json"])
        files = sorted(p.name for p in dataset[f"{split}_images"].iterdir())
        assert files == sorted(p.name for p in again[f"{split}_images"].iterdir())
        for name in files:
            assert (again[f"{split}_images"] / name).read_bytes() == (dataset[f"{split}_images"] / name).read_bytes()
    other = generate_dataset(tmp_path / "other", 2, 0, image_size=SIZE, seed=4)
    assert (other["train_images"] / "000001.jpg").read_bytes() != (dataset["train_images"] / "000001.jpg").read_bytes()


def test_pycocotools_loads_and_category_is_coco_person(dataset):
    for split, n in (("train", 24), ("val", 6)):
        coco = COCO(str(dataset[f"{split}_json"]))
        assert len(coco.getImgIds()) == n
        assert len(coco.getAnnIds(catIds=[1])) >= n
        (cat,) = coco.loadCats([1])
        assert cat["name"] == "person" and cat["keypoints"] == list(COCO17.keypoints)
        assert cat["skeleton"] == COCO_SKELETON_1
        for img in coco.loadImgs(coco.getImgIds()):
            decoded = cv2.imread(str(dataset[f"{split}_images"] / img["file_name"]))
            assert decoded.shape == (img["height"], img["width"], 3) == (SIZE[1], SIZE[0], 3)
        info = json.loads(dataset[f"{split}_json"].read_text())["info"]["provenance"]
        assert info["parameters"]["seed"] == 3 and info["parameters"]["split"] == split


def test_annotations_are_consistent(dataset):
    w, h = SIZE
    visibilities = []
    for split in ("train", "val"):
        data = json.loads(dataset[f"{split}_json"].read_text())
        for ann in data["annotations"]:
            kp = _keypoints(ann)
            assert kp.shape == (17, 3) and set(kp[:, 2]) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum()) > 0
            assert ann["iscrowd"] == 0 and ann["category_id"] == 1 and ann["area"] > 0
            x, y, bw, bh = ann["bbox"]
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw > 0 and bh > 0
            lab = kp[kp[:, 2] > 0]
            assert np.all((lab[:, 0] >= x) & (lab[:, 0] <= x + bw) & (lab[:, 1] >= y) & (lab[:, 1] <= y + bh))
            assert np.all(kp[kp[:, 2] == 0, :2] == 0)
            assert all(len(poly) >= 6 and len(poly) % 2 == 0 for poly in ann["segmentation"])
            visibilities.append(kp[:, 2])
    v = np.concatenate(visibilities)
    # All three COCO flags occur: visible, labelled-but-hidden, and outside the image.
    assert (v == 2).mean() > 0.5 and (v == 1).any() and (v == 0).any()


def test_joints_outside_image_are_unlabelled_with_zero_coordinates():
    w, h = SIZE
    rng = np.random.default_rng(11)
    person = project_person(rng, sample_body(rng), 0.8 * h, (0.0, h / 2), yaw=0.0, roll=0.0)
    _, (ann,) = render_image(rng, [person], SIZE)
    kp = _keypoints(ann)
    inside = (person.joints[:, 0] >= 0) & (person.joints[:, 0] <= w - 1) & (person.joints[:, 1] >= 0) & (person.joints[:, 1] <= h - 1)
    assert inside.any() and (~inside).any()
    assert np.all(kp[~inside] == 0)
    assert np.all(kp[inside, 2] > 0)
    np.testing.assert_allclose(kp[inside, :2], person.joints[inside], atol=0.006)


def _render_pair(monkeypatch, seed: int):
    images, anns = [], []
    for p in (0.0, 1.0):
        monkeypatch.setattr(synthetic_render, "OCCLUDER_P", p)
        image, a = generate_image(np.random.default_rng(seed), SIZE, 1)
        images.append(image.astype(int))
        anns.append(_keypoints(a[0]))
    return images, anns


def test_occluded_joints_are_labelled_but_not_visible(monkeypatch):
    hidden = 0
    for seed in range(12):
        (clean, occluded), (kp_clean, kp_occ) = _render_pair(monkeypatch, seed)
        # Occluders change nothing but their own pixels, and only hide joints.
        np.testing.assert_array_equal(kp_clean[:, :2], kp_occ[:, :2])
        changed = (np.abs(clean - occluded).max(2) > 0).astype(np.uint8)
        core = cv2.erode(changed, np.ones((5, 5), np.uint8)) > 0
        for k, ((x, y, v0), v1) in enumerate(zip(kp_clean, kp_occ[:, 2])):
            assert v1 <= v0, f"seed {seed}: joint {COCO17.keypoints[k]} became more visible under an occluder"
            if v0 == 0:
                assert v1 == 0
                continue
            px = changed[int(round(y)), int(round(x))] > 0
            if v0 == 2 and v1 == 1:
                assert px, f"seed {seed}: {COCO17.keypoints[k]} hidden although no occluder covers it"
                hidden += 1
            if v0 == 2 and core[int(round(y)), int(round(x))]:
                assert v1 == 1, f"seed {seed}: {COCO17.keypoints[k]} under an occluder still marked visible"
    assert hidden > 0


@pytest.mark.parametrize("yaw, sign", [(0.0, 1), (25.0, 1), (-30.0, 1), (180.0, -1), (160.0, -1)])
def test_left_joints_on_the_figures_left(yaw, sign):
    """Facing the camera, the person's left is on the image's right; facing away, on its left."""
    for seed in range(8):
        rng = np.random.default_rng(seed)
        person = project_person(rng, sample_body(rng), 120.0, (64.0, 80.0), yaw=yaw, roll=0.0, camera_pitch=0.0)
        x = person.joints[:, 0]
        for left, right in COCO17.flip_pairs:
            if COCO17.keypoints[left].split("_")[1] in ("hip", "shoulder"):  # the head may turn past 90 degrees
                assert sign * (x[left] - x[right]) > 0, (seed, COCO17.keypoints[left])


def test_face_points_turned_away_are_hidden(monkeypatch):
    monkeypatch.setattr(synthetic_render, "OCCLUDER_P", 0.0)
    for yaw, lo, hi in ((0.0, 0.7, 1.0), (180.0, 0.0, 0.1)):
        visible_face = []
        for seed in range(16):
            rng = np.random.default_rng(seed)
            person = project_person(rng, sample_body(rng), 120.0, (64.0, 80.0), yaw=yaw, roll=0.0, camera_pitch=0.0)
            _, (ann,) = render_image(rng, [person], SIZE)
            visible_face.append(_keypoints(ann)[[I["nose"], I["left_eye"], I["right_eye"]], 2] == 2)
        # Facing away only a head turned over the shoulder shows the face; facing the camera only a
        # strongly turned head or a raised arm hides it.
        assert lo <= np.mean(visible_face) <= hi, (yaw, np.mean(visible_face))


def test_limb_colours_encode_the_side(monkeypatch):
    """Left limbs are painted warm (red > blue) and right limbs cool (blue > red) so flips are learnable."""
    monkeypatch.setattr(synthetic_render, "OCCLUDER_P", 0.0)
    votes = []
    for seed in range(30):
        image, (ann,) = generate_image(np.random.default_rng(seed), SIZE, 1)
        kp = _keypoints(ann)
        for side, warm in (("left", True), ("right", False)):
            knee, ankle = kp[I[f"{side}_knee"]], kp[I[f"{side}_ankle"]]
            if knee[2] == 2 and ankle[2] == 2:
                x, y = np.round((knee[:2] + ankle[:2]) / 2).astype(int)
                r, _, b = image[y, x].astype(int)
                votes.append((r > b) == warm)
    # Crossed legs and arms over a shin account for the few misses.
    assert len(votes) >= 30 and np.mean(votes) > 0.85, (len(votes), np.mean(votes))


def test_reuse_overwrite_and_refusal(tmp_path):
    out = tmp_path / "ds"
    paths = generate_dataset(out, 2, 1, image_size=SIZE)
    stamp = paths["train_json"].stat().st_mtime_ns
    assert generate_dataset(out, 2, 1, image_size=SIZE) == paths
    assert paths["train_json"].stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="already exists"):
        generate_dataset(out, 3, 1, image_size=SIZE)
    assert len(list(paths["train_images"].iterdir())) == 2
    generate_dataset(out, 3, 1, image_size=SIZE, overwrite=True)
    assert len(list(paths["train_images"].iterdir())) == 3
    (paths["train_images"] / "000002.jpg").unlink()
    with pytest.raises(ValueError, match="already exists"):
        generate_dataset(out, 3, 1, image_size=SIZE)
    generate_dataset(out, 3, 1, image_size=SIZE, overwrite=True)
    assert (paths["train_images"] / "000002.jpg").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_no_partial_output_on_failure(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot create"):
        generate_dataset(blocker / "ds", 2, 1, image_size=SIZE)
    calls = []
    real = synthetic._encode_image

    def failing(image):
        calls.append(1)
        if len(calls) > 3:
            raise OSError("No space left on device")
        return real(image)

    monkeypatch.setattr(synthetic, "_encode_image", failing)
    with pytest.raises(OSError, match="No space"):
        generate_dataset(tmp_path / "ds", 5, 2, image_size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("kwargs, field", [
    ({"num_train": -1}, "num_train"), ({"image_size": (16, 300)}, "image_size"),
    ({"persons_per_image": (3, 1)}, "persons_per_image"), ({"persons_per_image": 0}, "persons_per_image"),
])
def test_bad_arguments(tmp_path, kwargs, field):
    args = {"num_train": 2, "num_val": 1, "image_size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=field):
        generate_dataset(tmp_path / "ds", **args)
    assert not (tmp_path / "ds").exists()


def test_coco_keypoint_dataset_reads_it(dataset):
    from dspose_graph.data import CocoKeypointDataset

    ds = CocoKeypointDataset(dataset["val_json"], dataset["val_images"], input_size=(96, 128), heatmap_size=(24, 32))
    anns = json.loads(dataset["val_json"].read_text())["annotations"]
    assert len(ds) == len(anns)
    sample = ds[0]
    assert sample["image"].shape == (3, 128, 96) and sample["heatmap"].shape == (17, 32, 24)
    ann = next(a for a in anns if a["id"] == int(sample["meta"]["ann_id"]))
    np.testing.assert_allclose(sample["meta"]["keypoints"].numpy(), _keypoints(ann), atol=1e-4)
    np.testing.assert_array_equal(sample["target_weight"].numpy() > 0, _keypoints(ann)[:, 2] > 0)


def test_cli_writes_dataset(tmp_path, capsys):
    import argparse

    from dspose_graph.cli import synth

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "cli"), "--train", "2", "--val", "1", "--size", "96x128", "--persons", "1-2"])
    assert synth.run(args) == 0
    coco = COCO(str(tmp_path / "cli" / "annotations" / "person_keypoints_train.json"))
    assert [(i["width"], i["height"]) for i in coco.loadImgs(coco.getImgIds())] == [(96, 128)] * 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--size", "96by128"])


def test_distribution_description_follows_the_generator_constants(monkeypatch):
    lines = synthetic.describe_distributions()
    assert any("N(0, 15 deg)" in line for line in lines) and any("p=0.3 per person" in line for line in lines)
    assert any("0.55..0.9 of the image height" in line for line in lines)
    assert any("elbow 0..60" in line and "elbow 0..145" in line for line in lines)
    monkeypatch.setattr(synthetic, "ROLL_SD", 25.0)
    monkeypatch.setattr(synthetic_render, "OCCLUDER_P", 0.5)
    changed = synthetic.describe_distributions()
    assert any("N(0, 25 deg)" in line for line in changed) and any("p=0.5 per person" in line for line in changed)


def test_cli_names_its_overwrite_flag(tmp_path, capsys):
    from dspose_graph.cli.main import main

    argv = ["synth", "--out", str(tmp_path / "cli"), "--train", "2", "--val", "1", "--size", "96x128"]
    assert main(argv) == 0
    assert main(argv + ["--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "pass --overwrite" in err and "overwrite=True" not in err
    assert main(argv + ["--seed", "1", "--overwrite"]) == 0
