"""``dspose train`` and ``dspose demo`` on impossible settings, locked and finished run folders, and a Ctrl-C
inside a checkpoint save: exit status, a message naming key and file (or folder and pid), metrics kept."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dspose_graph.cli.main import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_OS, main, run_guarded
from dspose_graph.io import LOCK_NAME, FolderLock, FolderLockedError
from dspose_graph.models import checkpoint as ckpt_module
from dspose_graph.models.checkpoint import load_checkpoint, previous_path, save_checkpoint

# Two 2-sample steps and a 4-sample evaluation: the smallest run that writes every file a run writes.
TINY = ["--set", "optim.epochs=1", "--set", "optim.batch_size=2", "--set", "data.limit_train=4",
        "--set", "data.limit_val=4", "--set", "eval.flip_test=false"]

CONFIG_CASES = {
    # the sweep's wrong outcomes: exit 0 with empty metrics, training on everything, one-epoch stops
    "negative_epochs": ("optim", "epochs", -1, r"optim\.epochs = -1: must be >= 1"),
    "zero_epochs": ("optim", "epochs", 0, r"optim\.epochs = 0: must be >= 1"),
    "batch_size_0": ("optim", "batch_size", 0, r"optim\.batch_size = 0: must be >= 1"),
    "limit_train_negative": ("data", "limit_train", -5, r"data\.limit_train = -5: must be >= 0"),
    "max_minutes_negative": ("run", "max_minutes", -1, r"run\.max_minutes = -1\.0: must be >= 0"),
    "lr_zero": ("optim", "lr", 0, r"optim\.lr = 0\.0: must be > 0"),
    "lr_nan": ("optim", "lr", float("nan"), r"optim\.lr = nan: must be a finite number"),
    "eval_batch_0": ("eval", "batch_size", 0, r"eval\.batch_size = 0: must be >= 1"),
    "negative_milestone": ("optim", "milestones", [5, -1], r"optim\.milestones\[1\] = -1: must be >= 1"),
    "negative_workers": ("run", "workers", -2, r"run\.workers = -2: must be >= 0"),
    "zero_sigma": ("data", "sigma", 0, r"data\.sigma = 0\.0: must be > 0"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_impossible_settings_name_key_and_file(tmp_path, capsys, synthetic_coco, write_config, case):
    section, key, value, expected = CONFIG_CASES[case]
    config = write_config(tmp_path / "c.yaml", synthetic_coco, tmp_path / "run")
    raw = yaml.safe_load(config.read_text())
    raw[section][key] = value
    config.write_text(yaml.safe_dump(raw))
    code = main(["train", str(config)])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and err.count("\n") == 1
    assert re.search(rf"^dspose train: error: {re.escape(str(config))}: {expected}$", err.strip()), err
    assert not (tmp_path / "run").exists()


def test_an_override_is_checked_too(tmp_path, capsys, synthetic_coco, write_config):
    config = write_config(tmp_path / "c.yaml", synthetic_coco, tmp_path / "run")
    code = main(["train", str(config), "--set", "data.limit_train=-5"])
    assert code == EXIT_INPUT and "--set data.limit_train=-5: data.limit_train = -5: must be >= 0" in capsys.readouterr().err


def test_demo_negative_epochs_stop_at_the_config_check(tmp_path, capsys):
    code = main(["demo", "--data", "synthetic", "--train-images", "2", "--val-images", "2", "--epochs", "-1",
                 "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and err.strip().endswith("--epochs -1: must be >= 1"), err
    assert not (tmp_path / "demo").exists()


def test_out_dir_naming_a_file_is_refused_by_key(tmp_path, capsys, synthetic_coco, write_config):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    config = write_config(tmp_path / "c.yaml", synthetic_coco, taken)
    code = main(["train", str(config), *TINY])
    assert code == EXIT_OS
    assert capsys.readouterr().err == (f"dspose train: error: run.out_dir {taken}: is an existing file; expected a "
                                       "folder (or a new name)\n")
    assert taken.read_text() == "mine"


def test_a_folder_held_by_a_live_run_is_refused_naming_folder_and_pid(tmp_path, capsys, synthetic_coco,
                                                                      write_config):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", synthetic_coco, out)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        out.mkdir()
        (out / LOCK_NAME).write_text(f"{holder.pid} {os.uname().nodename}\n")
        code = main(["train", str(config), *TINY])
        err = capsys.readouterr().err
    finally:
        holder.communicate(b"")
    assert code == EXIT_OS and err.count("\n") == 1
    assert f"{out} is in use by another run (pid {holder.pid}, lock file {out / LOCK_NAME})" in err, err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME], "nothing of the second run is written"


def test_lock_in_python_refuses_a_second_holder_and_releases(tmp_path):
    with FolderLock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(FolderLockedError, match=rf"pid {os.getpid()}"):
            FolderLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_is_taken_over_and_a_finished_run_keeps_its_metrics(tmp_path, capsys, caplog, synthetic_coco,
                                                                       write_config):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", synthetic_coco, out)
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{_dead_pid()} {os.uname().nodename}\n")
    code = main(["train", str(config), *TINY])
    first_run = capsys.readouterr()
    assert code == EXIT_OK, first_run.err
    assert "taking over the lock left by a run that no longer exists" in caplog.text
    assert not (out / LOCK_NAME).exists(), "released at the end"
    first = json.loads((out / "metrics.json").read_text())
    assert first["metrics"] and "AP" in first["metrics"]
    # The sweep's wrong outcome: --resume of a finished run overwrote metrics.json with {}.
    caplog.clear()
    code = main(["train", str(config), *TINY, "--resume", str(out / "last.pt")])
    out_text = capsys.readouterr().out  # pycocotools prints its progress before the metrics
    printed = json.loads(out_text[out_text.rindex("{\n"):])
    assert code == EXIT_OK and "the run already finished its 1 epochs; nothing to train" in caplog.text
    assert json.loads((out / "metrics.json").read_text())["metrics"] == first["metrics"]
    assert printed == {k: round(v, 6) for k, v in first["metrics"].items()}
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


def test_ctrl_c_between_the_renames_of_a_save_keeps_the_checkpoint_in_place(tmp_path, monkeypatch, capsys,
                                                                             marker_state):
    _state = marker_state
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    real_replace = os.replace

    def interrupted_replace(src, dst):
        if Path(dst) == path:  # the rename of the new file onto last.pt: after .prev was made
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_module.os, "replace", interrupted_replace)
    monkeypatch.setattr("dspose_graph.io.os.replace", interrupted_replace)
    code = run_guarded("train", lambda args: save_checkpoint(path, _state(2.0)), None)
    monkeypatch.undo()
    assert code == EXIT_INTERRUPTED and "interrupted" in capsys.readouterr().err
    assert load_checkpoint(path)["epoch"] == 1, "last.pt is still the last good checkpoint"
    assert load_checkpoint(previous_path(path))["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.prev"]
    save_checkpoint(path, _state(3.0))
    assert load_checkpoint(path)["epoch"] == 3 and load_checkpoint(previous_path(path))["epoch"] == 1


def test_a_missing_checkpoint_points_to_the_previous_one(tmp_path, marker_state):
    _state = marker_state
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"checkpoint not found: {re.escape(str(path))}; the previous "
                                                rf"checkpoint is kept at {re.escape(str(previous_path(path)))}"):
        load_checkpoint(path)
