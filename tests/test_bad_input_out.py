"""``--out`` naming an existing file (or, for file outputs, a folder) on every command that has ``--out``: one line
naming the path, exit status 3, before any work and with the file untouched. predict, plot, export and train
(``run.out_dir``) are covered in their own bad-input modules; these are the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspose_graph.cli.main import EXIT_OS, main

FOLDER_OUTPUTS = {
    "topology": ["topology", "--dataset", "mpii"],
    "synth": ["synth"],
    "experiment": ["experiment", "list"],
    "demo": ["demo", "--data", "synthetic"],
}
FILE_OUTPUTS = {
    "eval-coco": ["eval-coco", "--pred", "absent.json", "--annotations", "absent_gt.json"],
    "eval-mpii": ["eval-mpii", "--pred", "absent.npy", "--gt", "absent.mat"],
}


@pytest.mark.parametrize("command", sorted(FOLDER_OUTPUTS))
def test_out_naming_a_file(tmp_path, capsys, command):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    code = main([*FOLDER_OUTPUTS[command], "--out", str(taken)])
    assert code == EXIT_OS
    assert capsys.readouterr().err == (f"dspose {command}: error: --out {taken}: is an existing file; expected a "
                                       "folder (or a new name)\n")
    assert taken.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS))
@pytest.mark.parametrize("kind", ["folder", "under_a_file"])
def test_out_naming_a_folder_or_a_path_under_a_file(tmp_path, capsys, command, kind):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "taken").write_text("mine")
    out = tmp_path / "metrics" if kind == "folder" else tmp_path / "taken" / "metrics.json"
    code = main([*FILE_OUTPUTS[command], "--out", str(out)])
    expected = (f"--out {out}: is an existing folder; expected a file name" if kind == "folder" else
                f"--out {out}: {tmp_path / 'taken'} is a file, not a folder")
    assert code == EXIT_OS and capsys.readouterr().err == f"dspose {command}: error: {expected}\n"
    assert (tmp_path / "taken").read_text() == "mine" and not any((tmp_path / "metrics").iterdir())
