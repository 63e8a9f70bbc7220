"""Person detector for predict: box filtering, batching, mapping to crops, and the offline error.

Detectors here have randomly initialised weights (no download); a bias on the person logit makes persons
the top class so that the score filter and the cap have something to keep and something to drop.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from dspose_graph.cli.main import EXIT_RUNTIME, run_guarded
from dspose_graph.data import load_image
from dspose_graph.detect import PERSON_LABEL, DetectorUnavailableError, PersonDetector, select_persons

WEIGHTS = Path(__file__).resolve().parent.parent / "dspose_graph" / "weights" / "dspose_t_synthetic.pt"
CROWDED = "000000217285.jpg"  # coco_mini val: 13 annotated people


def test_select_persons_keeps_confident_persons_best_first_up_to_the_cap():
    boxes = np.array([[10, 10, 50, 90], [0, 0, 20, 20], [30, 5, 60, 100], [5, 5, 45, 80], [1, 1, 9, 9]], float)
    labels = np.array([1, 3, 1, 1, 1])
    scores = np.array([0.9, 0.99, 0.6, 0.95, 0.4])
    xywh, kept = select_persons(boxes, labels, scores, (100, 120), score_threshold=0.5, max_persons=2)
    np.testing.assert_allclose(kept, [0.95, 0.9])  # the car (0.99) and the weak person (0.4) are gone
    np.testing.assert_allclose(xywh, [[5, 5, 40, 75], [10, 10, 40, 80]])
    xywh, kept = select_persons(boxes, labels, scores, (100, 120), score_threshold=0.0, max_persons=10)
    assert len(kept) == 4 and (np.diff(kept) <= 0).all()


def test_select_persons_clips_to_the_image_and_drops_empty_or_non_finite():
    boxes = np.array([[-20, -10, 40, 50], [120, 10, 150, 40], [10, 10, 10, 30], [0, 0, 5, 5]], float)
    labels = np.full(4, PERSON_LABEL)
    scores = np.array([0.8, 0.9, 0.9, float("nan")])
    xywh, kept = select_persons(boxes, labels, scores, (100, 60))
    np.testing.assert_allclose(xywh, [[0, 0, 40, 50]])  # outside the image, zero width, NaN score: dropped
    np.testing.assert_allclose(kept, [0.8])
    empty, none = select_persons(np.zeros((0, 4)), np.zeros(0), np.zeros(0), (100, 60))
    assert empty.shape == (0, 4) and none.shape == (0,)
    with pytest.raises(ValueError, match="3 boxes, 2 labels, 3 scores"):
        select_persons(np.zeros((3, 4)), np.zeros(2), np.zeros(3), (10, 10))


def _random_detector(name: str = "fasterrcnn_mobilenet", **kwargs) -> PersonDetector:
    """Random weights with the person logit raised. (Random heads give nearly the same class logits to
    every proposal, so the class filter on mixed labels is tested on inline detections above.)"""
    torch.manual_seed(0)
    det = PersonDetector(name, pretrained=False, min_size=320, **kwargs)
    if name.startswith("fasterrcnn"):
        bias = det.model.roi_heads.box_predictor.cls_score.bias.view(1, 91)
    else:
        bias = det.model.head.classification_head.cls_logits.bias.view(-1, 91)
    with torch.no_grad():
        bias[:, PERSON_LABEL] += 4.0
    return det


@pytest.fixture(scope="module")
def crowded_image(coco_mini: Path) -> np.ndarray:
    return load_image(coco_mini / "images" / "val" / CROWDED)


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet", "retinanet"])
def test_detector_output_is_the_person_filter_of_the_raw_detections(crowded_image, name):
    det = _random_detector(name, score_threshold=0.05, max_persons=7)
    boxes, scores = det(crowded_image)
    with torch.inference_mode():
        raw = det.model([torch.from_numpy(crowded_image).permute(2, 0, 1).float() / 255.0])[0]
    labels = raw["labels"].numpy()
    assert (labels == PERSON_LABEL).sum() > len(scores), "the raw detections must hold more persons than kept"
    expect_boxes, expect_scores = select_persons(raw["boxes"].numpy(), labels, raw["scores"].numpy(),
                                                 (crowded_image.shape[1], crowded_image.shape[0]), 0.05, 7)
    np.testing.assert_allclose(boxes, expect_boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(scores, expect_scores, rtol=1e-5)
    assert len(scores) == 7 and (np.diff(scores) <= 0).all() and (scores >= 0.05).all()
    h, w = crowded_image.shape[:2]
    assert (boxes[:, 2:] > 0).all() and (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= w + 1e-3).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= h + 1e-3).all()


def test_batches_give_the_per_image_result(crowded_image):
    images = [crowded_image, np.ascontiguousarray(crowded_image[:, ::-1]), np.ascontiguousarray(crowded_image[::-1])]
    one_by_one = _random_detector(score_threshold=0.1, max_persons=5, batch_size=1).detect(images)
    batched = _random_detector(score_threshold=0.1, max_persons=5, batch_size=2).detect(images)
    assert len(batched) == 3
    for (b1, s1), (b2, s2) in zip(one_by_one, batched):
        # Random heads score many boxes alike: compare as sets, ties may come out in another order.
        order1, order2 = np.lexsort(np.round(b1, 1).T[::-1]), np.lexsort(np.round(b2, 1).T[::-1])
        np.testing.assert_allclose(b1[order1], b2[order2], atol=1e-2)
        np.testing.assert_allclose(s1[order1], s2[order2], atol=1e-4)


def _inside_crops(predictor, image: np.ndarray, boxes: np.ndarray, people: list[dict]) -> None:
    _, centers, scales = predictor.crop(image, boxes)
    for person, center, scale in zip(people, centers, scales):
        xy = person["keypoints"][:, :2]
        assert (np.abs(xy - center) <= scale / 2 + 1.0).all(), "keypoints must map back into their own crop"


def test_detected_boxes_map_to_one_pose_per_person_crop(crowded_image):
    from dspose_graph.predict import Predictor

    boxes, scores = _random_detector(score_threshold=0.1, max_persons=4)(crowded_image)
    predictor = Predictor(WEIGHTS, flip_test=False, batch_size=3)
    people = predictor.predict(crowded_image, boxes, scores)
    assert len(people) == len(boxes) == 4
    for person, box, score in zip(people, boxes, scores):
        np.testing.assert_allclose(person["box"], box)
        assert 0.0 <= person["score"] <= score + 1e-9 and person["keypoints"].shape == (predictor.schema.num_keypoints, 3)
    _inside_crops(predictor, crowded_image, boxes, people)


def test_a_real_multi_person_image_with_given_boxes(coco_mini, crowded_image):
    from dspose_graph.predict import Predictor

    data = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    image_id = next(im["id"] for im in data["images"] if im["file_name"] == CROWDED)
    boxes = np.array([a["bbox"] for a in data["annotations"]
                      if a["image_id"] == image_id and not a["iscrowd"] and a["num_keypoints"] >= 5])
    predictor = Predictor(WEIGHTS, flip_test=False, batch_size=5)
    people = predictor.predict(crowded_image, boxes)
    assert len(people) == len(boxes) == 13
    _inside_crops(predictor, crowded_image, boxes, people)
    centres = np.array([p["keypoints"][:, :2].mean(0) for p in people])
    assert len({tuple(np.round(c)) for c in centres}) == 13, "each box gives its own pose, not one for the image"


def test_offline_first_use_names_boxes_as_the_alternative(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(DetectorUnavailableError, match=r"cannot fetch its COCO weights https://download\.pytorch\.org"
                       r"/models/fasterrcnn_mobilenet_v3_large_fpn.*name resolution.*give person boxes with --boxes"):
        PersonDetector("fasterrcnn_mobilenet")
    code = run_guarded("predict", lambda args: PersonDetector("fasterrcnn_mobilenet"), argparse.Namespace())
    # One error line (older torchvision also announces each download it then fails on, on a line of its own).
    err = "".join(line for line in capsys.readouterr().err.splitlines(True) if not line.startswith("Downloading: "))
    assert code == EXIT_RUNTIME and err.count("\n") == 1 and "--boxes" in err and str(tmp_path / "torch") in err


@pytest.mark.parametrize("kwargs,expected", [
    ({"name": "yolo"}, r"unknown detector 'yolo'; valid: fasterrcnn, fasterrcnn_mobilenet, retinanet"),
    ({"score_threshold": 1.5}, r"score threshold must be in \[0, 1\], got 1.5"),
    ({"max_persons": 0}, r"max_persons must be a positive integer, got 0"),
    ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
])
def test_bad_detector_settings(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        PersonDetector(pretrained=False, **kwargs)


def test_images_must_be_rgb_uint8():
    det = _random_detector()
    with pytest.raises(ValueError, match=r"image 1 must be an RGB uint8 array \(H, W, 3\), got dtype uint8 shape \(20, 30\)"):
        det.detect([np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30), np.uint8)])
