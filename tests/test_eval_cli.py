"""``dspose eval-coco`` / ``dspose eval-mpii`` on files a user has (real ground truth)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import scipy.io

from dspose_graph.cli import eval_coco, eval_mpii
from dspose_graph.cli.main import COMMANDS
from dspose_graph.eval.coco_eval import evaluate_coco_files
from dspose_graph.topology.schemas import COCO17


def run_command(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def test_commands_are_registered():
    assert COMMANDS["eval-coco"] == "dspose_graph.cli.eval_coco"
    assert COMMANDS["eval-mpii"] == "dspose_graph.cli.eval_mpii"


def test_eval_mpii_cli(tmp_path, data_root, capsys):
    gt = data_root / "mpii" / "detections_our_format.mat"
    preds = scipy.io.loadmat(str(gt))["pos_pred_src"]  # (16, 2, N), the MATLAB layout
    pred_file = tmp_path / "tompson.mat"
    scipy.io.savemat(str(pred_file), {"preds": preds})
    out = tmp_path / "pckh.json"
    assert run_command(eval_mpii, ["--pred", str(pred_file), "--gt", str(gt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "95.60" in text and "82.34" in text and "81.46" in text
    record = json.loads(out.read_text())
    assert round(record["result"]["Mean"], 2) == 82.34
    assert record["provenance"]["source"] == "tompson.mat"
    # 0-based predictions (HRNet's raw output) get +1 before scoring.
    np.save(tmp_path / "zero.npy", preds.transpose(2, 0, 1) - 1.0)
    assert run_command(eval_mpii, ["--pred", str(tmp_path / "zero.npy"), "--gt", str(gt), "--zero-based"]) == 0
    assert "82.34" in capsys.readouterr().out


def test_eval_coco_cli(tmp_path, coco_mini, capsys):
    ann = coco_mini / "annotations" / "person_keypoints_val.json"
    data = json.loads(ann.read_text())
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    pred = tmp_path / "results.json"
    pred.write_text(json.dumps(results))
    out = tmp_path / "metrics.json"
    argv = ["--pred", str(pred), "--annotations", str(ann), "--sigmas-from-schema", "--out", str(out)]
    assert run_command(eval_coco, argv) == 0
    assert "100.00" in capsys.readouterr().out
    assert json.loads(out.read_text())["metrics"]["AP"] == 1.0


def test_evaluate_coco_files_from_python(tmp_path, coco_mini):
    ann = coco_mini / "annotations" / "person_keypoints_val.json"
    data = json.loads(ann.read_text())
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": s}
               for a, s in zip([a for a in data["annotations"] if a["num_keypoints"] > 0], [1.0, 0.1])]
    pred = tmp_path / "results.json"
    pred.write_text(json.dumps(results))
    stats, scored, sigmas = evaluate_coco_files(pred, ann, sigmas_from_schema=True, score_threshold=0.5)
    assert scored == 1 and 0.0 < stats["AP"] < 1.0 and sigmas == pytest.approx(list(COCO17.sigmas))
    assert evaluate_coco_files(pred, ann)[1:] == (2, None)


def test_eval_coco_cli_rejects_other_category(tmp_path, coco_mini):
    ann = coco_mini / "annotations" / "person_keypoints_val.json"
    pred = tmp_path / "results.json"
    pred.write_text(json.dumps([{"image_id": 1, "category_id": 7, "keypoints": [0] * 51, "score": 1.0}]))
    with pytest.raises(ValueError, match="field 'category_id' = 7"):
        run_command(eval_coco, ["--pred", str(pred), "--annotations", str(ann)])
