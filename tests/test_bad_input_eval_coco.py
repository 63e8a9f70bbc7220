"""``dspose eval-coco`` on bad ground truth and bad results: exit 2 and one line naming file, record and field."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from dspose_graph.cli.main import EXIT_INPUT, EXIT_OK, EXIT_OS, main


@pytest.fixture(scope="module")
def gt_data(coco_mini: Path) -> dict:
    return json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())


def _results(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": list(a["keypoints"]), "score": 1.0}
            for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]


def _eval(tmp_path: Path, gt: dict, results, capsys, *extra: str) -> tuple[int, str, str]:
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(results if isinstance(results, str) else json.dumps(results))
    code = main(["eval-coco", "--pred", str(pred_path), "--annotations", str(gt_path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _first_with_keypoints(gt: dict) -> int:
    return next(i for i, a in enumerate(gt["annotations"]) if a["num_keypoints"] > 0 and not a["iscrowd"])


def _set(field: str, value):
    def mutate(ann: dict) -> None:
        if field.startswith("keypoints["):
            ann["keypoints"][int(field[10:-1])] = value
        elif value is KeyError:
            del ann[field]
        else:
            ann[field] = value
    return mutate


GT_CASES = {
    # the wrong outcome of the sweep: one NaN made every prediction match (AP 100 for poses 300 px off)
    "nan_keypoint": (_set("keypoints[4]", float("nan")), r"field 'keypoints'\[4\] \(keypoint 'left_eye' y\) = nan is NaN/inf"),
    "inf_keypoint": (_set("keypoints[0]", float("inf")), r"field 'keypoints'\[0\] \(keypoint 'nose' x\) = inf"),
    "string_keypoint": (_set("keypoints[6]", "12"), r"field 'keypoints'\[6\] .* = '12' is a str, not a number"),
    "short_keypoints": (lambda a: a.update(keypoints=a["keypoints"][:48]), r"field 'keypoints' must be 51 finite numbers .* got 48"),
    "visibility_3": (_set("keypoints[2]", 3), r"visibility of 'nose' is 3; expected 0 .*, 1 .* or 2"),
    "nan_bbox": (lambda a: a["bbox"].__setitem__(2, float("nan")), r"field 'bbox'\[2\] = nan is NaN/inf"),
    "negative_bbox": (lambda a: a["bbox"].__setitem__(3, -4.0), r"field 'bbox' .* negative width or height"),
    "nan_area": (_set("area", float("nan")), r"field 'area' = nan must be a finite number >= 0"),
    "no_num_keypoints": (_set("num_keypoints", KeyError), r"missing fields \['num_keypoints'\]"),
    "unknown_image": (_set("image_id", 123456789), r"image_id is not in 'images'"),
}


@pytest.mark.parametrize("case", sorted(GT_CASES))
def test_bad_ground_truth_is_refused_naming_annotation_and_field(tmp_path, capsys, gt_data, case):
    gt = copy.deepcopy(gt_data)
    results = _results(gt)
    i = _first_with_keypoints(gt)
    mutate, expected = GT_CASES[case]
    mutate(gt["annotations"][i])
    ann = gt["annotations"][i]
    code, out, err = _eval(tmp_path, gt, results, capsys)
    assert code == EXIT_INPUT and out == "", out
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"gt.json: annotation id {ann['id']} (annotations[{i}], image_id {ann['image_id']})" in err, err
    assert re.search(expected, err), err


def _record(i: int, field: str, value):
    def mutate(results: list) -> None:
        if field.startswith("keypoints["):
            results[i]["keypoints"][int(field[10:-1])] = value
        elif value is KeyError:
            del results[i][field]
        else:
            results[i][field] = value
    return mutate


RESULT_CASES = {
    "string_image_id": (lambda r: r[1].update(image_id=str(r[1]["image_id"])),
                        r"record 1: field 'image_id' = '(\d+)' is not in the ground truth; it is the string '\1', the ground "
                        r"truth has the number \1: write it without quotes"),
    "unknown_image_id": (_record(2, "image_id", 987654321), r"record 2: field 'image_id' = 987654321 is not in the ground truth$"),
    "string_category": (_record(0, "category_id", "1"), r"record 0: field 'category_id' = '1' .*it is the string '1', the ground truth has the number 1"),
    "other_category": (_record(0, "category_id", 3), r"record 0: field 'category_id' = 3 but .* another category"),
    "nan_keypoint": (_record(3, "keypoints[10]", float("nan")), r"record 3: field 'keypoints'\[10\] \(keypoint 'left_ear' y\) = nan is NaN/inf"),
    "string_keypoint": (_record(2, "keypoints[5]", "abc"), r"record 2: field 'keypoints'\[5\] \(keypoint 'left_eye' v\) = 'abc' is a str"),
    "null_keypoint": (_record(2, "keypoints[1]", None), r"record 2: field 'keypoints'\[1\] .* = None is a NoneType"),
    "short_keypoints": (lambda r: r[1].update(keypoints=r[1]["keypoints"][:48]), r"record 1: field 'keypoints' must be 51 finite numbers .* got 48 values"),
    "keypoints_not_list": (_record(1, "keypoints", "1 2 3"), r"record 1: field 'keypoints' must be a list of 51 numbers .* got str"),
    "nan_score": (_record(0, "score", float("nan")), r"record 0: field 'score' = nan is not a finite number"),
    "string_score": (_record(0, "score", "0.9"), r"record 0: field 'score' = '0.9' is not a finite number"),
    "missing_score": (_record(4, "score", KeyError), r"record 4: missing field\(s\) \['score'\]"),
    "not_an_object": (lambda r: r.__setitem__(2, [1, 2, 3]), r"record 2: expected an object, got list"),
}


@pytest.mark.parametrize("case", sorted(RESULT_CASES))
def test_bad_results_are_refused_naming_record_and_field(tmp_path, capsys, gt_data, case):
    results = _results(gt_data)
    mutate, expected = RESULT_CASES[case]
    mutate(results)
    code, out, err = _eval(tmp_path, gt_data, results, capsys)
    assert code == EXIT_INPUT and out == "", out
    assert err.startswith("dspose eval-coco: error: ") and err.count("\n") == 1, err
    assert "pred.json: " in err and re.search(expected, err.strip()), err


def test_number_ids_against_string_ids_in_the_ground_truth_say_so(tmp_path, capsys, gt_data):
    gt = copy.deepcopy(gt_data)
    for item in gt["images"] + gt["annotations"]:
        key = "id" if "file_name" in item else "image_id"
        item[key] = str(item[key])
    results = _results(gt_data)
    code, _, err = _eval(tmp_path, gt, results, capsys)
    first = results[0]["image_id"]
    assert code == EXIT_INPUT
    assert f"record 0: field 'image_id' = {first} is not in the ground truth; the ground truth has the string '{first}'" in err


@pytest.mark.parametrize("text,expected", [
    ('{"image_id": 1}', r"expected a JSON list of result records, got dict"),
    ("[{", r"results file .*pred.json: malformed JSON"),
    ("[]", r"no keypoint results to evaluate"),
])
def test_unusable_results_files(tmp_path, capsys, gt_data, text, expected):
    code, _, err = _eval(tmp_path, gt_data, text, capsys)
    assert code == EXIT_INPUT and re.search(expected, err), err


def test_missing_files_and_out_folder(tmp_path, capsys, gt_data):
    code = main(["eval-coco", "--pred", str(tmp_path / "absent.json"), "--annotations", str(tmp_path / "absent_gt.json")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "absent_gt.json does not exist" in err
    (tmp_path / "metrics").mkdir()
    code, out, err = _eval(tmp_path, gt_data, _results(gt_data), capsys, "--out", str(tmp_path / "metrics"))
    assert code == EXIT_OS and str(tmp_path / "metrics") in err and "Traceback" not in err, err


def test_good_input_still_scores_and_far_predictions_score_low(tmp_path, capsys, gt_data):
    results = _results(gt_data)
    code, out, _ = _eval(tmp_path, gt_data, results, capsys)
    assert code == EXIT_OK and "100.00" in out
    far = copy.deepcopy(results)
    for r in far:
        r["keypoints"] = [v + 300.0 if i % 3 != 2 else v for i, v in enumerate(r["keypoints"])]
    code, out, _ = _eval(tmp_path, gt_data, far, capsys)
    ap = float(out.splitlines()[1].split("|")[0])
    assert code == EXIT_OK and ap == 0.0
