"""The guard at the ``dspose`` entry: one line on stderr and a documented exit status per kind of failure."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from dspose_graph.cli.main import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OS,
    EXIT_RUNTIME,
    EXIT_STATUS,
    check_device_option,
    main,
    run_guarded,
)
from dspose_graph.models import checkpoint as ckpt_module
from dspose_graph.models.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "dspose_graph" / "weights" / "dspose_t_synthetic.pt"


def _raiser(exc: BaseException):
    def run(args: argparse.Namespace) -> int:
        raise exc
    return run


CASES = {
    "bad_input": (ValueError("results.json: record 3: field 'score' = 'x' is not a number"), EXIT_INPUT,
                  "results.json: record 3: field 'score' = 'x' is not a number"),
    "missing_file": (FileNotFoundError("annotation file a.json does not exist"), EXIT_INPUT,
                     "annotation file a.json does not exist"),
    "key": (KeyError("schema 'coco' has no keypoint 'tail'"), EXIT_INPUT, "schema 'coco' has no keypoint 'tail'"),
    "disk_full": (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/out/results.json"), EXIT_OS,
                  "/runs/out/results.json: No space left on device"),
    "out_is_a_dir": (IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/runs/metrics"), EXIT_OS,
                     "/runs/metrics: Is a directory"),
    "out_is_a_file": (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/runs/x/a.png"), EXIT_OS,
                      "/runs/x/a.png: Not a directory"),
    "exists": (FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), "/runs/x"), EXIT_OS, "/runs/x: File exists"),
    "permission": (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/runs/a", None, "/runs/b"), EXIT_OS,
                   "/runs/a -> /runs/b: Permission denied"),
    "cuda_oom": (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nsee the docs"), EXIT_RUNTIME,
                 "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    "runtime": (RuntimeError("Found no NVIDIA driver on your system."), EXIT_RUNTIME,
                "RuntimeError: Found no NVIDIA driver on your system."),
    "ctrl_c": (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted; files already written are complete (a training "
               "run resumes from OUT/last.pt with --resume)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_kind_of_failure_is_one_line_and_its_exit_status(capsys, case):
    exc, code, message = CASES[case]
    assert run_guarded("predict", _raiser(exc), argparse.Namespace()) == code
    assert capsys.readouterr().err == f"dspose predict: error: {message}\n"
    assert f"  {code} " in EXIT_STATUS  # documented in --help (and docs/using.md)


@pytest.mark.parametrize("case", ["disk_full", "ctrl_c", "runtime"])
def test_debug_adds_the_traceback(capsys, case):
    exc, code, message = CASES[case]
    assert run_guarded("train", _raiser(exc), argparse.Namespace(), debug=True) == code
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)"), err
    assert err.rstrip().splitlines()[-1] == f"dspose train: error: {message}"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(TypeError):
        run_guarded("plot", _raiser(TypeError("unsupported operand")), argparse.Namespace())


def test_exit_status_table_is_in_help_and_in_the_docs(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "130  interrupted (Ctrl-C)" in out and "--debug" in out
    docs = (REPO / "docs" / "using.md").read_text()
    for code in (0, 1, 2, 3, 4, 130):
        assert re.search(rf"^\| `{code}` \|", docs, flags=re.M), f"exit status {code} missing in docs/using.md"


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    cv2.imwrite(str(d / "person.png"), np.full((128, 96, 3), 127, np.uint8))
    return d


@pytest.mark.parametrize("device,expected", [
    ("gpu", r"--device 'gpu' is not a torch device; use cpu, cuda or cuda:N \('gpu' is spelled 'cuda' in torch\)"),
    ("gpu:0", r"--device 'gpu:0' is not a torch device"),
    ("tpu0", r"--device 'tpu0' is not a torch device; use cpu, cuda or cuda:N$"),
    ("cuda", r"--device cuda: CUDA is not available here .*; use --device cpu"),
    ("cuda:99", r"--device cuda:99: (CUDA is not available here|this machine has \d+ CUDA device)"),
])
@pytest.mark.parametrize("command", ["predict", "plot"])
def test_device_without_a_driver_or_misspelled(tmp_path, capsys, image_dir, device, expected, command):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = (["predict", "--weights", str(WEIGHTS), "--images", str(image_dir)] if command == "predict" else
            ["plot", "adjacency", "--weights", str(WEIGHTS), "--image", str(image_dir / "person.png")])
    code = main([*argv, "--out", str(tmp_path / "out"), "--device", device])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and re.search(expected, err.strip()), err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_cpu_and_auto_devices_pass_the_check():
    for name in ("cpu", "auto", None):
        check_device_option(argparse.Namespace(device=name))
    check_device_option(argparse.Namespace())


def test_ctrl_c_while_a_checkpoint_is_written_keeps_the_last_good_one(tmp_path, monkeypatch, capsys, marker_state):
    _state = functools.partial(marker_state, size=256)  # large enough that truncate(100) cuts it
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half written when the signal arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module.torch, "save", interrupted_save)
    code = run_guarded("train", lambda args: save_checkpoint(path, _state(2.0)), argparse.Namespace())
    assert code == EXIT_INTERRUPTED and "interrupted" in capsys.readouterr().err
    assert load_checkpoint(path)["epoch"] == 1 and torch.equal(load_checkpoint(path)["state_dict"]["w"],
                                                               torch.full((256, 256), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"], "no temporary file is left behind"


def _dspose(*args: str, debug_env: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("DSPOSE_DEBUG", None)
    if debug_env:
        env["DSPOSE_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", "dspose_graph", *args], env=env, capture_output=True, text=True,
                          cwd=REPO)


def test_real_command_one_line_without_debug_traceback_with_it(tmp_path):
    argv = ["eval-mpii", "--pred", str(tmp_path / "absent.npy"), "--gt", str(tmp_path / "absent.mat")]
    plain = _dspose(*argv)
    assert plain.returncode == EXIT_INPUT
    assert plain.stderr == f"dspose eval-mpii: error: prediction file {tmp_path / 'absent.npy'} does not exist\n"
    for run in (_dspose(*argv, debug_env=True), _dspose("--debug", *argv)):
        assert run.returncode == EXIT_INPUT and "Traceback (most recent call last)" in run.stderr
        assert run.stderr.rstrip().endswith("does not exist")


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_and_the_run_resumes(coco_mini, tmp_path, signal_training):
    out = tmp_path / "run"
    cfg = {
        "model": {"name": "dspose_t"},
        "data": {"kind": "coco", "root": str(coco_mini), "train_ann": "annotations/person_keypoints_train.json",
                 "train_images": "images/train", "val_ann": "annotations/person_keypoints_val.json",
                 "val_images": "images/val", "limit_train": 16, "limit_val": 4},
        # Far more epochs than the test waits for: the run is still training when SIGINT arrives however late
        # this process reads the child's log on a loaded machine; the resume below finishes a short run.
        "optim": {"lr": 1e-3, "epochs": 1000, "batch_size": 4, "milestones": [1]},
        "eval": {"every": 0, "flip_test": False, "batch_size": 4},
        "run": {"out_dir": str(out), "seed": 0, "workers": 0, "checkpoint_every": 1, "log_every": 1,
                "progress": False, "tensorboard": False},
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("DSPOSE_DEBUG", None)
    # Step 6 is epoch 2, step 2 of 4: last.pt was written at step 5.
    code, before, rest = signal_training(config, env, signal.SIGINT, at_step=6, cwd=REPO)
    assert code == EXIT_INTERRUPTED, before + rest
    assert "Traceback" not in rest and rest.rstrip().splitlines()[-1].startswith("dspose train: error: interrupted")
    state = load_checkpoint(out / "last.pt")
    assert state["global_step"] >= 5
    epochs = int(state["epoch"]) + 2  # the interrupted epoch and one more
    resumed = subprocess.run([sys.executable, "-m", "dspose_graph", "train", str(config), "--resume",
                              str(out / "last.pt"), "--set", f"optim.epochs={epochs}"], env=env, cwd=REPO,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "last.pt")["epoch"] == epochs
