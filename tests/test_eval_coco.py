"""COCO OKS AP through pycocotools on real annotations; rescoring, OKS-NMS and bad results files."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from dspose_graph.eval.coco_eval import STAT_NAMES, evaluate_coco, format_coco_table, make_coco_results, oks_iou, oks_nms, rescore
from dspose_graph.formats.coco import load_coco, read_detections, read_keypoint_results, write_keypoint_results
from dspose_graph.topology.schemas import COCO17


@pytest.fixture(scope="module")
def fixture_dir(data_root):
    return data_root / "mmpose_fixtures" / "coco"


@pytest.fixture(scope="module", params=["coco_mini_val", "coco_mini_train", "mmpose"])
def gt_file(request, coco_mini, fixture_dir):
    return {
        "coco_mini_val": coco_mini / "annotations" / "person_keypoints_val.json",
        "coco_mini_train": coco_mini / "annotations" / "person_keypoints_train.json",
        "mmpose": fixture_dir / "test_coco.json",
    }[request.param]


def gt_results(coco, score: float = 1.0) -> list[dict]:
    anns = [a for a in coco.loadAnns(coco.getAnnIds()) if a["num_keypoints"] > 0 and not a["iscrowd"]]
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": list(a["keypoints"]),
             "score": score} for a in anns]


def pycocotools_direct(coco, results, sigmas=None) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def perturbed(results, seed=0, noise=4.0):
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(results)
    for r in out:
        kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, noise, size=(kp.shape[0], 2))
        r["keypoints"] = kp.reshape(-1).tolist()
        r["score"] = float(rng.uniform(0.2, 1.0))
    return out


def test_ground_truth_as_prediction_gives_ap_1(gt_file, capsys):
    coco = load_coco(gt_file)
    stats = evaluate_coco(gt_results(coco), coco)
    assert stats["AP"] == 1.0 and stats["AP50"] == 1.0 and stats["AP75"] == 1.0 and stats["AR"] == 1.0
    assert capsys.readouterr().out == ""  # pycocotools' prints do not leak from library code
    assert "100.00" in format_coco_table(stats)


def test_perturbed_keypoints_match_pycocotools(gt_file, tmp_path):
    coco = load_coco(gt_file)
    results = perturbed(gt_results(coco))
    before = copy.deepcopy(results)
    stats = evaluate_coco(results, coco, results_path=tmp_path / "res.json")
    assert results == before  # loadRes did not touch the caller's records
    assert [stats[k] for k in STAT_NAMES] == pycocotools_direct(coco, results)
    assert 0.0 < stats["AP"] < 1.0
    assert json.loads((tmp_path / "res.json").read_text()) == json.loads(json.dumps(results))


def test_custom_sigmas_reach_cocoeval(coco_mini):
    coco = load_coco(coco_mini / "annotations" / "person_keypoints_val.json")
    results = perturbed(gt_results(coco), seed=3)
    wide = [2.0 * s for s in COCO17.sigmas]
    stats = evaluate_coco(results, coco, sigmas=wide)
    assert [stats[k] for k in STAT_NAMES] == pycocotools_direct(coco, results, wide)
    assert stats["AP"] > evaluate_coco(results, coco)["AP"]
    assert evaluate_coco(results, coco, sigmas=COCO17.sigmas) == evaluate_coco(results, coco)


def test_rescore_hand_computed():
    ks = np.array([[0.1, 0.5, 0.9], [0.1, 0.2, 0.05]])
    np.testing.assert_allclose(rescore(ks, [0.8, 0.9], threshold=0.2), [0.8 * 0.7, 0.0])


def test_oks_iou_identity_and_decay():
    rng = np.random.default_rng(0)
    pose = np.concatenate([rng.uniform(0, 100, (17, 2)), np.ones((17, 1))], axis=1)
    far = pose.copy()
    far[:, 0] += 50.0
    ious = oks_iou(pose, np.stack([pose, far]), 5000.0, np.array([5000.0, 5000.0]), COCO17.sigmas)
    assert ious[0] == pytest.approx(1.0)
    assert ious[1] < 0.05
    # With a confidence threshold only keypoints confident in both poses count.
    half = pose.copy()
    half[:8, 2] = 0.0
    half[:8, :2] += 80.0
    assert oks_iou(pose, half[None], 5000.0, np.array([5000.0]), COCO17.sigmas, vis_threshold=0.5)[0] == pytest.approx(1.0)
    assert oks_iou(pose, half[None], 5000.0, np.array([5000.0]), COCO17.sigmas)[0] < 0.6


def test_oks_nms_removes_duplicates(coco_mini):
    """Each real person plus two slightly moved, lower-scored copies: NMS keeps exactly the originals."""
    coco = load_coco(coco_mini / "annotations" / "person_keypoints_val.json")
    anns = [a for a in coco.loadAnns(coco.getAnnIds()) if a["num_keypoints"] >= 5 and not a["iscrowd"]]
    image_ids, kps, areas = [], [], []
    rng = np.random.default_rng(0)
    for a in anns:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)
        kp[:, 2] = 0.9
        for copy_i, conf in enumerate((0.9, 0.6, 0.5)):
            moved = kp.copy()
            if copy_i:
                moved[:, :2] += rng.normal(0, 0.5, size=(17, 2))
            moved[:, 2] = conf
            image_ids.append(a["image_id"])
            kps.append(moved)
            areas.append(a["area"])
    kps = np.stack(kps)
    results = make_coco_results(kps, image_ids, box_scores=np.ones(len(kps)), areas=np.asarray(areas),
                                sigmas=COCO17.sigmas, nms_threshold=0.9)
    assert len(results) == len(anns)
    assert all(r["score"] == pytest.approx(0.9) for r in results)
    originals = sorted((a["image_id"], tuple(a["keypoints"][0::3])) for a in anns)
    kept = sorted((r["image_id"], tuple(r["keypoints"][0::3])) for r in results)
    assert kept == originals
    # Without NMS the copies stay.
    assert len(make_coco_results(kps, image_ids, nms_threshold=None)) == 3 * len(anns)
    # Within one image, greedy order: best score first.
    img = np.asarray(image_ids) == image_ids[0]
    keep = oks_nms(kps[img], kps[img, :, 2].mean(axis=1), np.asarray(areas)[img], 0.9, COCO17.sigmas)
    assert keep[0] == 0 and len(keep) == sum(a["image_id"] == image_ids[0] for a in anns)


def test_oks_nms_default_sigmas_are_coco17_and_required_otherwise(coco_mini):
    coco = load_coco(coco_mini / "annotations" / "person_keypoints_val.json")
    ann = max(coco.loadAnns(coco.getAnnIds()), key=lambda a: a["num_keypoints"])
    kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    rng = np.random.default_rng(3)
    poses = np.stack([kp + np.c_[rng.normal(0, s, (17, 2)), np.zeros(17)] for s in (0.0, 2.0, 6.0, 12.0)])
    scores, areas = np.array([0.9, 0.8, 0.7, 0.6]), np.full(4, float(ann["area"]))
    np.testing.assert_array_equal(oks_nms(poses, scores, areas, 0.9), oks_nms(poses, scores, areas, 0.9, COCO17.sigmas))
    assert len(make_coco_results(poses, [1] * 4, areas=areas)) == len(oks_nms(poses, scores, areas, 0.9))
    with pytest.raises(ValueError, match="OKS sigmas for a 16-keypoint skeleton"):
        oks_nms(poses[:, :16], scores, areas, 0.9)


def box_iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_detector_boxes_rescore_and_nms(fixture_dir):
    """mmpose's real detections: boxes matched to a person carry its keypoints; NMS leaves one pose each."""
    coco = load_coco(fixture_dir / "test_coco.json")
    dets = read_detections(fixture_dir / "test_coco_det_AP_H_56.json", images=coco.imgs).boxes
    assert len(dets) == 118
    strong = read_detections(fixture_dir / "test_coco_det_AP_H_56.json", images=coco.imgs, score_threshold=0.5)
    assert 0 < len(strong.boxes) < len(dets) and strong.skipped["low_score"] == len(dets) - len(strong.boxes)
    anns = [a for a in coco.loadAnns(coco.getAnnIds()) if a["num_keypoints"] > 0]
    image_ids, kps, box_scores, areas, matched = [], [], [], [], set()
    for image_id, bbox, score, _ in dets:
        same = [a for a in anns if a["image_id"] == image_id]
        ious = [box_iou(bbox, a["bbox"]) for a in same]
        if not ious or max(ious) < 0.6:
            continue
        a = same[int(np.argmax(ious))]
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)
        kp[:, 2] = 0.8
        image_ids.append(image_id)
        kps.append(kp)
        box_scores.append(score)
        areas.append(bbox[2] * bbox[3] * 1.25**2)
        matched.add(a["id"])
    assert len(kps) > len(matched)  # there are duplicate boxes to suppress
    results = make_coco_results(np.stack(kps), image_ids, box_scores, areas, sigmas=COCO17.sigmas)
    assert len(results) == len(matched)
    assert all(0 < r["score"] <= 0.8 for r in results)
    stats = evaluate_coco(results, coco)
    assert stats["AP"] > 0.5 and stats["AP"] == pycocotools_direct(coco, results)[0]


def test_bad_results(tmp_path, fixture_dir):
    coco = load_coco(fixture_dir / "test_coco.json")
    good = gt_results(coco)
    det_file = fixture_dir / "test_coco_det_AP_H_56.json"

    other_cat = json.loads(det_file.read_text())
    for d in other_cat:
        d["category_id"] = 3
    path = tmp_path / "cars.json"
    path.write_text(json.dumps(other_cat))
    with pytest.raises(ValueError, match=r"cars.json: no record has category_id 1 .*found category ids \[3\]"):
        read_detections(path, images=coco.imgs)
    cars = tmp_path / "car_keypoints.json"
    write_keypoint_results(cars, [{**r, "category_id": 3} for r in good])
    with pytest.raises(ValueError, match="car_keypoints.json: record 0: field 'category_id' = 3 .*another category"):
        read_keypoint_results(cars, coco)

    missing_img = copy.deepcopy(good)
    missing_img[2]["image_id"] = 123456789
    with pytest.raises(ValueError, match="record 2: field 'image_id' = 123456789 is not in the ground truth"):
        evaluate_coco(missing_img, coco)

    short = copy.deepcopy(good)
    short[1]["keypoints"] = short[1]["keypoints"][:48]
    with pytest.raises(ValueError, match="record 1: field 'keypoints' must be 51"):
        evaluate_coco(short, coco)

    nan = copy.deepcopy(good)
    nan[0]["keypoints"][4] = float("nan")
    with pytest.raises(ValueError, match="record 0: .*NaN"):
        evaluate_coco(nan, coco)

    zero_box = json.loads(det_file.read_text())
    zero_box[5]["bbox"][2] = 0.0
    path = tmp_path / "zero.json"
    write_keypoint_results(path, zero_box)
    read = read_detections(path, images=coco.imgs)  # an empty box is dropped and counted, not an error
    assert read.skipped["empty_box"] == 1 and [r for *_, r in read.boxes] == [i for i in range(len(zero_box)) if i != 5]

    with pytest.raises(ValueError, match="no keypoint results"):
        evaluate_coco([], coco)
    with pytest.raises(ValueError, match="3 OKS sigmas"):
        evaluate_coco(good, coco, sigmas=[0.1, 0.1, 0.1])
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_keypoint_results(tmp_path / "absent.json", coco)
    with pytest.raises(ValueError, match="NaN"):
        make_coco_results(np.full((1, 17, 3), np.nan), [785])
