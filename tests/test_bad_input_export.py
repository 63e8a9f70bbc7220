"""``dspose export onnx`` on bad opsets, weights, check images and outputs: exit status, a message naming the
user's file (never an internal temporary one), nothing written."""

from __future__ import annotations

import collections
import errno
import os
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dspose_graph.cli.main import EXIT_INPUT, EXIT_OK, EXIT_OS, main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _export(capsys, *argv: str) -> tuple[int, str]:
    code = main(["export", "onnx", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("opset", ["3", "13", "24", "99"])
def test_an_opset_outside_the_range_names_the_range(tmp_path, capsys, ckpt, opset):
    code, err = _export(capsys, "--weights", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--opset", opset)
    assert code == EXIT_INPUT and err == (f"dspose export: error: --opset {opset}: expected an ONNX opset from 14 (the "
                                          "first with the attention operator) to 23 (the newest this torch exports)\n")
    assert not list(tmp_path.iterdir())


def _foreign_files(folder: Path) -> dict[str, tuple[Path, str]]:
    pickle_path = folder / "notes.pkl"
    pickle_path.write_bytes(pickle.dumps({"lr": 0.1, "epochs": 3}))
    counter = folder / "counter.pkl"
    counter.write_bytes(pickle.dumps(collections.Counter(a=1)))
    module = folder / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    weights = folder / "state_dict.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), weights)
    return {
        "plain_pickle": (pickle_path, r"notes\.pkl: not a dspose-graph checkpoint: an intact Python pickle of a dict "
                                      r"with keys lr, epochs, not a torch\.save checkpoint"),
        "pickled_class": (counter, r"counter\.pkl: not a dspose-graph checkpoint: a Python pickle holding Python "
                                   r"objects \(first found: collections\.Counter\)"),
        "whole_module": (module, r"whole_model\.pt: not a dspose-graph checkpoint: an intact torch\.save file holding "
                                 r"pickled Python objects \(first found: torch\.nn\.modules\.linear\.Linear\)"),
        "bare_state_dict": (weights, r"state_dict\.pt: not a dspose-graph checkpoint \(expected a dict with "
                                     r"format='dspose-graph', found a dict with keys weight, bias\)"),
    }


@pytest.mark.parametrize("case", ["plain_pickle", "pickled_class", "whole_module", "bare_state_dict"])
def test_an_intact_foreign_file_is_named_for_what_it_is(tmp_path, capsys, case):
    path, expected = _foreign_files(tmp_path)[case]
    code, err = _export(capsys, "--weights", str(path), "--out", str(tmp_path / "m.onnx"))
    assert code == EXIT_INPUT and re.search(expected, err), err
    assert "corrupt" not in err and not (tmp_path / "m.onnx").exists()


def test_a_truncated_checkpoint_is_called_truncated(tmp_path, capsys, ckpt):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:4000])
    code, err = _export(capsys, "--weights", str(cut), "--out", str(tmp_path / "m.onnx"))
    assert code == EXIT_INPUT and f"{cut}: corrupt or truncated checkpoint" in err


def test_a_truncated_check_image_fails_before_the_export(tmp_path, capsys, ckpt):
    image = tmp_path / "person.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (128, 96, 3), dtype=np.uint8))
    image.write_bytes(image.read_bytes()[:1500])
    code, err = _export(capsys, "--weights", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--check-image", str(image))
    assert code == EXIT_INPUT and f"image file {image} is a truncated JPEG" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("kind", ["out_is_a_folder", "parent_is_a_file", "not_onnx", "nan_atol"])
def test_bad_outputs_and_tolerances_are_named(tmp_path, capsys, ckpt, kind):
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "file").write_text("mine")
    argv, code_expected, expected = {
        "out_is_a_folder": (["--out", str(tmp_path / "folder.onnx")], EXIT_OS,
                            f"--out {tmp_path / 'folder.onnx'}: is an existing folder; expected a file name"),
        "parent_is_a_file": (["--out", str(tmp_path / "file" / "m.onnx")], EXIT_OS,
                             f"--out {tmp_path / 'file' / 'm.onnx'}: {tmp_path / 'file'} is a file, not a folder"),
        "not_onnx": (["--out", str(tmp_path / "m.txt")], EXIT_INPUT,
                     f"ONNX output {tmp_path / 'm.txt'}: expected a file name ending in .onnx"),
        "nan_atol": (["--out", str(tmp_path / "m.onnx"), "--atol", "nan"], EXIT_INPUT,
                     "--atol must be a number >= 0, got nan"),
    }[kind]
    code, err = _export(capsys, "--weights", str(ckpt), *argv)
    assert code == code_expected and err == f"dspose export: error: {expected}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.onnx"]


def test_a_full_disk_names_the_users_file_not_the_temporary_one(tmp_path, capsys, ckpt, monkeypatch):
    import onnx

    def disk_full(proto, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(onnx, "save", disk_full)
    out = tmp_path / "m.onnx"
    code, err = _export(capsys, "--weights", str(ckpt), "--out", str(out), "--no-check")
    assert code == EXIT_OS and err == f"dspose export: error: {out}: No space left on device\n"
    assert list(tmp_path.iterdir()) == [], "the temporary file is removed"


def test_the_valid_range_exports(tmp_path, capsys, ckpt):
    code, err = _export(capsys, "--weights", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--opset", "14")
    assert code == EXIT_OK, err
