"""Skeleton drawing: pixels change where joints are, sides get their colours, bad shapes fail clearly."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dspose_graph.viz.skeleton import CENTRE, LEFT, RIGHT, draw_skeleton, save_prediction_grid
from dspose_graph.topology.schemas import COCO17, MPII16

I = {n: i for i, n in enumerate(COCO17.keypoints)}


def _frontal_person(v: int = 2) -> np.ndarray:
    """A hand-placed upright COCO-17 person facing the camera in a 200x200 image."""
    xy = {
        "nose": (100, 30), "left_eye": (106, 24), "right_eye": (94, 24), "left_ear": (114, 28), "right_ear": (86, 28),
        "left_shoulder": (125, 60), "right_shoulder": (75, 60), "left_elbow": (140, 95), "right_elbow": (60, 95),
        "left_wrist": (150, 130), "right_wrist": (50, 130), "left_hip": (115, 120), "right_hip": (85, 120),
        "left_knee": (118, 155), "right_knee": (82, 155), "left_ankle": (120, 190), "right_ankle": (80, 190),
    }
    kp = np.zeros((17, 3))
    for name, (x, y) in xy.items():
        kp[I[name]] = (x, y, v)
    return kp


def test_draws_joints_in_side_colours_and_returns_a_copy():
    image = np.zeros((200, 200, 3), np.uint8)
    kp = _frontal_person()
    out = draw_skeleton(image, kp, COCO17)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert image.sum() == 0, "the input image must not be modified"
    for k, (x, y, _) in enumerate(kp):
        assert out[int(y), int(x)].any(), COCO17.keypoints[k]
    assert tuple(out[130, 150]) == LEFT and tuple(out[130, 50]) == RIGHT
    # A limb between two left joints is drawn in the left colour, the shoulder line in the centre colour.
    assert tuple(out[int((60 + 95) / 2), int((125 + 140) / 2)]) == LEFT
    assert tuple(out[60, 100]) == CENTRE
    # Far from the figure nothing changes.
    assert not out[:15].any() and not out[:, :40].any()


def test_threshold_hides_unlabelled_and_low_score_joints():
    image = np.zeros((200, 200, 3), np.uint8)
    kp = _frontal_person()
    kp[I["left_wrist"], 2] = 0
    out = draw_skeleton(image, kp, COCO17)
    assert not out[128:133, 148:153].any(), "a joint with v=0 and the limb to it must not be drawn"
    scores = np.full(17, 0.9)
    scores[I["right_ankle"]] = 0.1
    out = draw_skeleton(image, kp[:, :2], COCO17, scores=scores, thr=0.3)
    assert not out[188:193, 78:83].any() and out[190, 120].any()


def test_several_persons_and_other_schemas():
    image = np.zeros((200, 400, 3), np.uint8)
    one = _frontal_person()
    two = one.copy()
    two[:, 0] += 200
    out = draw_skeleton(image, np.stack([one, two]), COCO17)
    assert out[130, 150].any() and out[130, 350].any()
    mpii = np.column_stack([np.linspace(20, 180, 16), np.linspace(20, 180, 16)])
    out = draw_skeleton(np.zeros((200, 200, 3), np.uint8), mpii, MPII16)
    assert all(out[int(y), int(x)].any() for x, y in mpii)
    # Sides come from the names: MPII's flip pairs list the right joint first.
    for name, colour in (("r_ankle", RIGHT), ("l_ankle", LEFT), ("l_wrist", LEFT), ("pelvis", CENTRE)):
        x, y = mpii[MPII16.index(name)]
        assert tuple(out[int(round(y)), int(round(x))]) == colour, name


@pytest.mark.parametrize("image, keypoints, scores, message", [
    (np.zeros((50, 50, 3), np.uint8), np.zeros((16, 3)), None, "K=17"),
    (np.zeros((50, 50, 3), np.uint8), np.zeros((17, 4)), None, r"\(K, 2\|3\)"),
    (np.zeros((50, 50, 3), np.uint8), np.zeros((2, 3, 17, 3)), None, "got"),
    (np.zeros((50, 50), np.uint8), np.zeros((17, 3)), None, r"\(H, W, 3\) uint8"),
    (np.zeros((50, 50, 3), np.float32), np.zeros((17, 3)), None, "uint8"),
    (np.zeros((50, 50, 3), np.uint8), np.zeros((2, 17, 2)), np.zeros(17), "scores"),
])
def test_bad_shapes_give_clear_errors(image, keypoints, scores, message):
    with pytest.raises(ValueError, match=message):
        draw_skeleton(image, keypoints, COCO17, scores=scores)


def test_prediction_grid_png_and_pdf(tmp_path):
    images = [np.full((200, 200, 3), 60 * i, np.uint8) for i in range(3)]
    kps = [_frontal_person() for _ in range(3)]
    png = save_prediction_grid(images, kps, COCO17, tmp_path / "grid.png", titles=["a", "b", "c"])
    decoded = cv2.imread(str(png))
    assert decoded is not None and decoded.shape[1] > decoded.shape[0] > 100
    pdf = save_prediction_grid(images, kps, COCO17, tmp_path / "grid.pdf", scores_list=[None, np.ones(17), None], ncols=2)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.pdf", "grid.png"]


def test_prediction_grid_bad_input(tmp_path):
    images = [np.zeros((50, 50, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"\.pdf"):
        save_prediction_grid(images, [np.zeros((17, 3))], COCO17, tmp_path / "grid.jpg")
    with pytest.raises(ValueError, match="one keypoints array per image"):
        save_prediction_grid(images, [], COCO17, tmp_path / "grid.png")
    with pytest.raises(ValueError, match="titles"):
        save_prediction_grid(images, [np.zeros((17, 3))], COCO17, tmp_path / "grid.png", titles=["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_draws_real_coco_annotations(coco_mini):
    """Ground truth of a real COCO image drawn on it: every labelled joint's pixel changes."""
    ann_files = sorted(coco_mini.rglob("*.json"))
    data = next(json.loads(p.read_text()) for p in ann_files if "keypoint" in p.name)
    ann = next(a for a in data["annotations"] if a["num_keypoints"] >= 10)
    img = next(i for i in data["images"] if i["id"] == ann["image_id"])
    image = np.zeros((img["height"], img["width"], 3), np.uint8)
    kp = np.asarray(ann["keypoints"], float).reshape(17, 3)
    out = draw_skeleton(image, kp, COCO17)
    assert all(out[int(round(y)), int(round(x))].any() for x, y, v in kp if v > 0)
