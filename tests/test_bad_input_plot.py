"""``dspose plot`` on bad boxes, splits and output folders: exit status and a message naming the option/field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from dspose_graph.cli.main import EXIT_INPUT, EXIT_OK, EXIT_OS, main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "person.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (128, 96, 3), dtype=np.uint8))
    return path


BOX_CASES = {
    # the sweep's wrong outcome: negative and NaN boxes were accepted and plotted
    "negative_x": (["-5", "0", "40", "60"], r"--box -5 0 40 60: field 'x' = -5 is negative"),
    "negative_width": (["0", "0", "-40", "60"], r"--box 0 0 -40 60: field 'w' = -40(\.0)? is not positive"),
    "nan_height": (["0", "0", "40", "nan"], r"--box 0 0 40 nan: field 'h' = nan is not a finite pixel value"),
    "inf_y": (["0", "inf", "40", "60"], r"--box 0 inf 40 60: field 'y' = inf is not a finite pixel value"),
    "zero_height": (["0", "0", "40", "0"], r"--box 0 0 40 0: field 'h' = 0(\.0)? is not positive"),
}


@pytest.mark.parametrize("case", sorted(BOX_CASES))
def test_a_bad_box_is_refused_naming_the_field(tmp_path, capsys, ckpt, image, case):
    box, expected = BOX_CASES[case]
    code = main(["plot", "adjacency", "--weights", str(ckpt), "--image", str(image), "--box", *box,
                 "--out", str(tmp_path / "fig")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and err.count("\n") == 1 and re.search(expected, err), err
    assert not (tmp_path / "fig").exists()


def test_a_good_box_plots(tmp_path, capsys, ckpt, image):
    code = main(["plot", "adjacency", "--weights", str(ckpt), "--image", str(image), "--box", "4", "8", "60", "90",
                 "--out", str(tmp_path / "fig"), "--formats", "png"])
    assert code == EXIT_OK, capsys.readouterr().err
    assert json.loads((tmp_path / "fig" / "adjacency.json").read_text())["samples"] == "person.png"


def test_box_with_data_is_refused(tmp_path, capsys, ckpt):
    code = main(["plot", "adjacency", "--weights", str(ckpt), "--data", str(tmp_path / "c.yaml"), "--box", "0", "0",
                 "4", "4", "--out", str(tmp_path / "fig")])
    assert code == EXIT_INPUT and "--box applies to --image" in capsys.readouterr().err


def test_split_test_is_refused_by_name(tmp_path, capsys, ckpt):
    """The sweep's wrong outcome: --split test silently used the train split and labelled it "test"."""
    with pytest.raises(SystemExit) as stop:
        main(["plot", "adjacency", "--weights", str(ckpt), "--data", str(tmp_path / "c.yaml"), "--split", "test",
              "--out", str(tmp_path / "fig")])
    assert stop.value.code == EXIT_INPUT
    assert re.search(r"argument --split: invalid choice: 'test' \(choose from '?train'?, '?val'?\)",
                     capsys.readouterr().err)


@pytest.mark.parametrize("split", ["train", "val"])
def test_the_split_asked_for_is_the_one_used(tmp_path, capsys, ckpt, synthetic_coco, write_config, split):
    config = write_config(tmp_path / "c.yaml", synthetic_coco, tmp_path / "run")
    code = main(["plot", "adjacency", "--weights", str(ckpt), "--data", str(config), "--split", split, "--num", "1000",
                 "--out", str(tmp_path / "fig"), "--formats", "png"])
    assert code == EXIT_OK, capsys.readouterr().err
    record = json.loads((tmp_path / "fig" / "adjacency.json").read_text())
    ann = json.loads((synthetic_coco / "annotations" / f"person_keypoints_{split}.json").read_text())
    persons = sum(1 for a in ann["annotations"] if a["num_keypoints"] > 0 and not a.get("iscrowd", 0))
    assert record["samples"] == f"c.yaml, {split}" and record["num_samples"] == persons


@pytest.mark.parametrize("figure", ["adjacency", "topology"])
def test_out_naming_a_file_stops_before_any_work(tmp_path, capsys, ckpt, image, figure):
    taken = tmp_path / "taken.png"
    taken.write_text("mine")
    source = ["--weights", str(ckpt), "--image", str(image)] if figure == "adjacency" else []
    code = main(["plot", figure, *source, "--out", str(taken)])
    assert code == EXIT_OS
    assert capsys.readouterr().err == f"dspose plot: error: --out {taken}: is an existing file; expected a folder " \
                                      "(or a new name)\n"
    assert taken.read_text() == "mine"
