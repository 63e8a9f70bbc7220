"""MPII PCKh against the official validation ground truth: golden Tompson numbers, GT = 100, known shifts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from dspose_graph.eval.pckh import evaluate_pckh, format_pckh_table, load_mpii_gt, load_predictions


@pytest.fixture(scope="module")
def gt_mat(data_root):
    return data_root / "mpii" / "detections_our_format.mat"


@pytest.fixture(scope="module")
def mat(gt_mat):
    return scipy.io.loadmat(str(gt_mat))


@pytest.fixture(scope="module")
def gt(gt_mat):
    return load_mpii_gt(gt_mat)


def test_tompson_predictions_golden(gt_mat, mat):
    """The manifest's sanity values; its 81.46 is the unweighted mean, the pooled (paper) mean is 82.34."""
    r = evaluate_pckh(mat["pos_pred_src"].transpose(2, 0, 1), gt_mat)
    golden = {"Head": 95.60, "Shoulder": 92.71, "Elbow": 83.36, "Wrist": 76.74, "Hip": 81.93, "Knee": 73.36,
              "Ankle": 65.45, "Mean (unweighted)": 81.46, "Mean": 82.34, "Head (toolkit)": 96.66}
    for key, value in golden.items():
        assert round(r[key], 2) == value, key
    assert r["count"]["rank"] == 2115 and r["count"]["head"] == 2932
    assert r["Mean@0.1"] < r["Mean"]
    table = format_pckh_table(r)
    assert "82.34" in table and "81.46" in table and "unweighted" in table


def test_mean_at_0_1_is_what_official_prints_under_that_name(gt_mat, mat):
    """Official TokenPose/HRNet's 'Mean@0.1' is pckAll[11] of arange(0, 0.51, 0.01): the 0.11 threshold."""
    preds = mat["pos_pred_src"].transpose(2, 0, 1)
    r = evaluate_pckh(preds, gt_mat)
    official_rng = np.arange(0, 0.5 + 0.01, 0.01)
    assert r["low_threshold"] == official_rng[11]
    assert round(r["Mean@0.1"], 2) == 33.14 and round(r["Mean@0.1 (exact)"], 2) == 28.97
    assert r["Mean@0.1"] == evaluate_pckh(preds, gt_mat, low_threshold=official_rng[11])["Mean@0.1"]
    table = format_pckh_table(r)
    assert "Mean@0.1" in table.splitlines()[1] and "33.14" in table and "28.97" in table


def test_ground_truth_scores_100(gt_mat, gt):
    r = evaluate_pckh(gt["gt"], gt_mat)
    for key in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1", "Mean@0.1 (exact)", "Mean (unweighted)",
                "UBody"):
        assert r[key] == 100.0, key


def test_known_shift_hand_computed(gt_mat, gt):
    """Persons with an even index moved by 0.6 head sizes (all wrong), odd ones by 0.4 (all right)."""
    n = gt["gt"].shape[0]
    factor = np.where(np.arange(n) % 2 == 0, 0.6, 0.4)
    preds = gt["gt"].copy()
    preds[:, :, 1] += (factor * gt["head_size"])[:, None]
    r = evaluate_pckh(preds, gt_mat)
    valid = ~gt["missing"]
    odd = np.arange(n) % 2 == 1
    expected_joint = 100.0 * valid[odd].sum(axis=0) / valid.sum(axis=0)
    joints = [j for j in range(16) if j not in (6, 7)]
    assert r["Head"] == pytest.approx(expected_joint[9])
    assert r["Ankle"] == pytest.approx((expected_joint[0] + expected_joint[5]) / 2)
    assert r["Mean"] == pytest.approx(100.0 * valid[odd][:, joints].sum() / valid[:, joints].sum())
    assert r["Mean (unweighted)"] == pytest.approx(expected_joint[joints].mean())
    assert r["Mean@0.1"] == 0.0 and r["Mean@0.1 (exact)"] == 0.0


def test_missing_joints_are_ignored(gt_mat, gt):
    preds = gt["gt"].copy()
    preds[gt["missing"]] += 1e4  # garbage where there is no ground truth
    assert evaluate_pckh(preds, gt_mat)["Mean"] == 100.0


def test_threshold_rule_is_less_or_equal(tmp_path):
    """The toolkit counts dist <= threshold as correct (bearpaw's script uses <, HRNet <=)."""
    n = 4
    pos = np.zeros((16, 2, n))
    pos[:, 0, :] = np.arange(16)[:, None] * 10.0 + 100.0
    pos[:, 1, :] = 200.0
    boxes = np.zeros((2, 2, n))
    boxes[1] = [[30.0] * n, [40.0] * n]  # diagonal 50 -> head size 0.6 * 50
    missing = np.zeros((16, n), dtype=np.uint8)
    missing[6:8] = 1
    path = tmp_path / "gt.mat"
    scipy.io.savemat(str(path), {"pos_gt_src": pos, "headboxes_src": boxes, "jnt_missing": missing})
    head = load_mpii_gt(path)["head_size"][0]
    assert head == 30.0
    preds = pos.transpose(2, 0, 1).copy()
    preds[:, :, 0] += np.array([15.0, 15.0, 15.5, 14.0])[:, None]  # 0.5, 0.5, >0.5, <0.5 head sizes
    r = evaluate_pckh(preds, path)
    assert r["Mean"] == 75.0
    assert np.isnan(r["per_joint"]["pelv"])


@pytest.mark.parametrize("layout", ["mat_n162", "mat_162n", "npy", "json_list", "json_dict", "npy_n163"])
def test_prediction_file_formats(tmp_path, mat, layout):
    pred = mat["pos_pred_src"]  # (16, 2, N)
    nk2 = pred.transpose(2, 0, 1)
    if layout == "mat_n162":
        path = tmp_path / "p.mat"
        scipy.io.savemat(str(path), {"preds": nk2})
    elif layout == "mat_162n":
        path = tmp_path / "p.mat"
        scipy.io.savemat(str(path), {"preds": pred})
    elif layout == "npy":
        path = tmp_path / "p.npy"
        np.save(path, nk2)
    elif layout == "npy_n163":
        path = tmp_path / "p.npy"
        np.save(path, np.concatenate([nk2, np.ones(nk2.shape[:2] + (1,))], axis=2))
    elif layout == "json_list":
        path = tmp_path / "p.json"
        path.write_text(json.dumps(nk2.tolist()))
    else:
        path = tmp_path / "p.json"
        path.write_text(json.dumps({"preds": nk2.tolist()}))
    np.testing.assert_array_equal(load_predictions(path), nk2)
    np.testing.assert_array_equal(load_predictions(path, zero_based=True), nk2 + 1.0)


def test_bad_predictions(tmp_path, gt_mat, gt):
    with pytest.raises(ValueError, match="N = 2958"):
        evaluate_pckh(gt["gt"][:100], gt_mat)
    nan = gt["gt"].copy()
    nan[5, 3, 0] = np.nan
    with pytest.raises(ValueError, match="person 5, joint lhip"):
        evaluate_pckh(nan, gt_mat)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 14, 2)))
    with pytest.raises(ValueError, match="bad.npy.*got shape \\(10, 14, 2\\)"):
        load_predictions(bad)
    other = tmp_path / "other.mat"
    scipy.io.savemat(str(other), {"joints": np.zeros((16, 2, 3))})
    with pytest.raises(ValueError, match="no field 'preds'.*joints"):
        load_predictions(other)
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        load_predictions(tmp_path / "nope.mat")
    txt = tmp_path / "p.txt"
    txt.write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported prediction format"):
        load_predictions(txt)
    broken = tmp_path / "broken.json"
    broken.write_text("[[1, 2], [3")
    with pytest.raises(ValueError, match="malformed JSON"):
        load_predictions(broken)


def test_bad_ground_truth_file(tmp_path):
    path = tmp_path / "gt.mat"
    scipy.io.savemat(str(path), {"pos_gt_src": np.zeros((16, 2, 3))})
    with pytest.raises(ValueError, match="missing fields \\['jnt_missing', 'headboxes_src'\\]"):
        load_mpii_gt(path)
    with pytest.raises(FileNotFoundError):
        load_mpii_gt(tmp_path / "absent.mat")
