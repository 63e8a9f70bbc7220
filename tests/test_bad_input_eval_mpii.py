"""``dspose eval-mpii`` on bad ground truth, predictions and thresholds: exit 2 and one line naming what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from dspose_graph.cli.main import EXIT_INPUT, EXIT_OK, EXIT_OS, main
from dspose_graph.eval.pckh import check_threshold, evaluate_pckh


@pytest.fixture(scope="module")
def gt_mat(data_root: Path) -> Path:
    return data_root / "mpii" / "detections_our_format.mat"


@pytest.fixture(scope="module")
def gt_fields(gt_mat: Path) -> dict:
    return {k: v for k, v in scipy.io.loadmat(str(gt_mat)).items() if not k.startswith("__")}


@pytest.fixture()
def tompson(tmp_path: Path, gt_fields: dict) -> Path:
    """The Tompson et al. predictions shipped in the ground-truth file, as (N, 16, 2) .npy."""
    path = tmp_path / "tompson.npy"
    np.save(path, gt_fields["pos_pred_src"].transpose(2, 0, 1))
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["eval-mpii", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(err: str) -> None:
    assert err.startswith("dspose eval-mpii: error: ") and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("flag,value", [("--threshold", "-1"), ("--threshold", "0"), ("--threshold", "1.5"),
                                        ("--threshold", "nan"), ("--low-threshold", "-0.1"), ("--low-threshold", "2")])
def test_thresholds_outside_zero_one_are_refused(capsys, gt_mat, tompson, flag, value):
    code, out, err = _run(capsys, "--pred", str(tompson), "--gt", str(gt_mat), flag, value)
    assert code == EXIT_INPUT and out == ""
    _one_line_error(err)
    assert f"{flag} {float(value)!r} is outside (0, 1]" in err


def test_threshold_one_is_accepted_and_the_api_checks_too(capsys, gt_mat, tompson):
    code, out, _ = _run(capsys, "--pred", str(tompson), "--gt", str(gt_mat), "--threshold", "1")
    assert code == EXIT_OK and "PCKh@1 on 2958" in out
    with pytest.raises(ValueError, match=r"low_threshold -1 is outside \(0, 1\]"):
        evaluate_pckh(np.zeros((2958, 16, 2)), gt_mat, low_threshold=-1)
    check_threshold(0.5)


def _broken_gt(tmp_path: Path, fields: dict, case: str) -> tuple[Path, str]:
    f = {k: np.array(v, copy=True) for k, v in fields.items()}
    if case == "zero_head_box":
        f["headboxes_src"][1, :, 7] = f["headboxes_src"][0, :, 7]
        expected = r"person 7 \(column 7 of 'headboxes_src'\) has head size 0; expected a head box of positive size"
    elif case == "nan_head_box":
        f["headboxes_src"][0, 1, 11] = np.nan
        expected = r"person 11 \(column 11 of 'headboxes_src'\) has head size nan"
    elif case == "nan_joint":
        person = int(np.flatnonzero(f["jnt_missing"][9] == 0)[3])
        f["pos_gt_src"][9, 0, person] = np.nan
        expected = rf"person {person} joint 'head' in 'pos_gt_src' is not finite but 'jnt_missing' marks it annotated"
    elif case == "17_joints":
        f["pos_gt_src"] = np.concatenate([f["pos_gt_src"], f["pos_gt_src"][:1]], axis=0)
        expected = r"expected pos_gt_src \(16, 2, N\), .* got \(17, 2, 2958\)"
    else:
        del f["headboxes_src"]
        expected = r"missing fields \['headboxes_src'\]"
    path = tmp_path / f"gt_{case}.mat"
    scipy.io.savemat(str(path), f)
    return path, expected


@pytest.mark.parametrize("case", ["zero_head_box", "nan_head_box", "nan_joint", "17_joints", "no_head_boxes"])
def test_bad_ground_truth_is_refused_naming_person_and_field(tmp_path, capsys, gt_fields, tompson, case):
    path, expected = _broken_gt(tmp_path, gt_fields, case)
    code, out, err = _run(capsys, "--pred", str(tompson), "--gt", str(path))
    assert code == EXIT_INPUT and out == ""
    _one_line_error(err)
    assert f"gt_{case}.mat" in err and re.search(expected, err), err


def test_a_missing_joint_may_hold_nan(tmp_path, capsys, gt_fields, tompson):
    f = {k: np.array(v, copy=True) for k, v in gt_fields.items()}
    person = int(np.flatnonzero(f["jnt_missing"][0] == 1)[0])
    f["pos_gt_src"][0, :, person] = np.nan
    path = tmp_path / "gt.mat"
    scipy.io.savemat(str(path), f)
    code, out, _ = _run(capsys, "--pred", str(tompson), "--gt", str(path))
    assert code == EXIT_OK and "82.34" in out  # the pooled Mean of the shipped file, unchanged


def _bad_predictions(tmp_path: Path, gt_fields: dict, case: str) -> tuple[Path, str]:
    preds = gt_fields["pos_pred_src"].transpose(2, 0, 1)
    if case == "17_joints":
        path, arr = tmp_path / "p.npy", np.concatenate([preds, preds[:, :1]], axis=1)
        expected = r"p.npy: predictions must be \(N, 16, 2\), \(N, 16, 3\) or \(16, 2, N\); got shape \(2958, 17, 2\)"
    elif case == "too_few_persons":
        path, arr = tmp_path / "p.npy", preds[:100]
        expected = (r"p.npy: predictions must be \(N, 16, 2\) with N = 2958 validation persons, got shape "
                    r"\(100, 16, 2\) \(100 persons, the ground truth has 2958")
    elif case == "nan":
        arr = preds.copy()
        arr[5, 10, 1] = np.nan
        path, expected = tmp_path / "p.npy", r"p.npy: predictions contain NaN/inf \(first at person 5, joint rwri\)"
    elif case == "strings_in_json":
        path, arr = tmp_path / "p.json", None
        path.write_text(json.dumps({"preds": [[["abc", 1]] * 16]}))
        expected = r"p.json: field 'preds' is not a rectangular numeric array"
    elif case == "unknown_key":
        path, arr = tmp_path / "p.json", None
        path.write_text(json.dumps({"predictions": preds.tolist()}))
        expected = r"p.json: JSON object has no field 'preds'; fields are \['predictions'\]"
    else:
        path, arr = tmp_path / "p.csv", None
        path.write_text("1,2\n")
        expected = r"p.csv: unsupported prediction format '.csv'"
    if arr is not None:
        np.save(path, arr)
    return path, expected


@pytest.mark.parametrize("case", ["17_joints", "too_few_persons", "nan", "strings_in_json", "unknown_key", "csv"])
def test_bad_predictions_are_refused_naming_file_and_shape(tmp_path, capsys, gt_mat, gt_fields, case):
    path, expected = _bad_predictions(tmp_path, gt_fields, case)
    code, out, err = _run(capsys, "--pred", str(path), "--gt", str(gt_mat))
    assert code == EXIT_INPUT and out == ""
    _one_line_error(err)
    assert re.search(expected, err), err


def test_missing_files_and_out_folder(tmp_path, capsys, gt_mat, tompson):
    code, _, err = _run(capsys, "--pred", str(tmp_path / "absent.npy"), "--gt", str(gt_mat))
    assert code == EXIT_INPUT and "prediction file" in err and "absent.npy does not exist" in err
    code, _, err = _run(capsys, "--pred", str(tompson), "--gt", str(tmp_path / "absent.mat"))
    assert code == EXIT_INPUT and "absent.mat does not exist" in err
    (tmp_path / "result").mkdir()
    code, _, err = _run(capsys, "--pred", str(tompson), "--gt", str(gt_mat), "--out", str(tmp_path / "result"))
    assert code == EXIT_OS and str(tmp_path / "result") in err and "Traceback" not in err, err
