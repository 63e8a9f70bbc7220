"""Shipped weights by name: ``dspose weights`` lists the model cards, and every entry point that takes a checkpoint
path takes a shipped name too; an unknown name is a one-line error listing the known ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import dspose_graph.weights as weights
from dspose_graph.cli.main import EXIT_INPUT, main
from dspose_graph.predict import Predictor

NAME = "dspose_t_synthetic"


def _config(synthetic_coco: Path, tmp_path: Path) -> Path:
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name": "dspose_t"},
        "data": {"kind": "coco", "root": str(synthetic_coco), "val_ann": "annotations/person_keypoints_val.json",
                 "val_images": "images/val", "train_ann": "annotations/person_keypoints_train.json",
                 "train_images": "images/train", "limit_val": 4, "limit_train": 4},
        "eval": {"batch_size": 4},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu", "workers": 0, "progress": False,
                "tensorboard": False},
    }))
    return path


def _entry_points(synthetic_coco: Path, tmp_path: Path, weights_name: str) -> dict[str, list[str]]:
    image = next((synthetic_coco / "images" / "val").iterdir())
    config = str(_config(synthetic_coco, tmp_path))
    return {
        "predict": ["predict", "--weights", weights_name, "--images", str(image), "--out", str(tmp_path / "pred")],
        "plot adjacency": ["plot", "adjacency", "--weights", weights_name, "--image", str(image), "--out",
                           str(tmp_path / "plot"), "--formats", "png"],
        "export": ["export", "onnx", "--weights", weights_name, "--out", str(tmp_path / "m.onnx"), "--no-check"],
        "eval": ["train", config, "--eval-only", "--resume", weights_name],
        "train --init-from": ["train", config, "--init-from", weights_name, "--dry-run"],
    }


def test_dspose_weights_lists_every_model_card(capsys, tmp_path, monkeypatch):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(weights.shipped_names()) >= 1
    line = next(l for l in out if l.startswith(f"{NAME}:"))
    assert "dspose_t, skeleton coco" in line and "PCK@0.2 83.96" in line and f"{NAME}.pt" in line
    # Generic over the cards: a second model with its own card is listed and loads by name.
    for f in weights.WEIGHTS_DIR.glob(f"{NAME}.*"):
        shutil.copy(f, tmp_path / f.name)
    card = json.loads((tmp_path / f"{NAME}.json").read_text())
    card.update(model="dspose_t", schema="coco", val_metrics={"torso PCK@0.2": 12.5, "swap_rate": 3.0})
    (tmp_path / "second_model.json").write_text(json.dumps(card))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    assert weights.shipped_names() == (NAME, "second_model")
    assert main(["weights"]) == 0
    second = capsys.readouterr().out.strip().splitlines()[1]
    assert second.startswith("second_model: dspose_t, skeleton coco") and "torso PCK@0.2 12.5" in second
    assert Predictor("second_model").weights == tmp_path / f"{NAME}.pt"


def test_an_unknown_name_is_one_line_listing_the_known_ones(synthetic_coco, tmp_path, capsys):
    with pytest.raises(ValueError, match=rf"unknown weights 'nope': not a shipped name \(.*{NAME}.*\) and no such file"):
        Predictor("nope")
    for what, argv in _entry_points(synthetic_coco, tmp_path, "nope").items():
        assert main(argv) == EXIT_INPUT, what
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unknown weights 'nope'" in err[0] and NAME in err[0], (what, err)
    # A path stays a path: a missing file is named as such.
    image = next((synthetic_coco / "images" / "val").iterdir())
    assert main(["predict", "--weights", str(tmp_path / "gone.pt"), "--images", str(image), "--out",
                 str(tmp_path / "o")]) == EXIT_INPUT
    assert "gone.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_every_entry_point_takes_a_shipped_name(synthetic_coco, tmp_path, capsys):
    for what, argv in _entry_points(synthetic_coco, tmp_path, NAME).items():
        assert main(argv) == 0, (what, capsys.readouterr().err)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["dspose.codec"] == "hrnet"  # the checkpoint's codec travels with the exported graph
    assert (tmp_path / "plot" / "adjacency.json").is_file()
    assert json.loads((tmp_path / "plot" / "adjacency.json").read_text())["weights"] == NAME
    assert (tmp_path / "run" / "metrics_eval.json").is_file()
