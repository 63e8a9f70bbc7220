"""Exact resume: a run SIGKILLed mid-epoch and resumed logs the same loss sequence as an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from dspose_graph.models.checkpoint import load_checkpoint
from dspose_graph.train.logs import read_csv

STEP_LINE = re.compile(r"step (\d+) loss")


def _dspose(*args: str) -> list[str]:
    return [sys.executable, "-m", "dspose_graph", "-v", *args]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_losses(coco_mini, tmp_path, child_env, write_config):
    configs = []
    for name in ("full", "killed"):
        path = write_config(tmp_path / f"{name}.yaml", coco_mini, tmp_path / name)
        raw = yaml.safe_load(path.read_text())
        raw["optim"]["epochs"] = 3  # 10 steps of slack after the kill point, however late this process reads
        path.write_text(yaml.safe_dump(raw))
        configs.append(path)
    full_cfg, killed_cfg = configs
    subprocess.run(_dspose("train", str(full_cfg)), check=True, env=child_env(), capture_output=True)
    full = read_csv(tmp_path / "full" / "steps.csv")
    assert len(full) == 18

    # Kill the second run as soon as it reports step 8 (epoch 2 of 3, step 2 of 6) or later.
    proc = subprocess.Popen(_dspose("train", str(killed_cfg)), env=child_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    killed_at = None
    for line in proc.stderr:
        m = STEP_LINE.search(line)
        if m and int(m.group(1)) >= 8:
            killed_at = int(m.group(1))
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert state["epoch"] in (1, 2) and 0 < state["step_in_epoch"] < 6, "the checkpoint must be mid-epoch"

    subprocess.run(_dspose("train", str(killed_cfg), "--resume", str(tmp_path / "killed" / "last.pt")),
                   check=True, env=child_env(), capture_output=True)
    resumed = read_csv(tmp_path / "killed" / "steps.csv")
    assert [r["global_step"] for r in resumed] == [r["global_step"] for r in full]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]  # bit-identical (repr of the floats)
    assert [r["lr"] for r in resumed] == [r["lr"] for r in full]
    a = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "killed" / "last.pt")["state_dict"]
    assert all((a[k] == b[k]).all() for k in a)


def test_resume_from_truncated_checkpoint_is_refused_and_previous_kept(coco_mini, tmp_path, child_env, write_config):
    cfg = write_config(tmp_path / "c.yaml", coco_mini, tmp_path / "out", checkpoint_every=0)
    cfg_small = yaml.safe_load(cfg.read_text())
    cfg_small["optim"]["epochs"] = 2
    cfg_small["data"]["limit_train"] = 8
    cfg.write_text(yaml.safe_dump(cfg_small))
    subprocess.run(_dspose("train", str(cfg)), check=True, env=child_env(), capture_output=True)
    last = tmp_path / "out" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    res = subprocess.run(_dspose("train", str(cfg), "--resume", str(last)), env=child_env(), capture_output=True, text=True)
    assert res.returncode == 2
    assert "corrupt or truncated" in res.stderr and "last.pt.prev" in res.stderr
    assert load_checkpoint(tmp_path / "out" / "last.pt.prev")["epoch"] == 1


def test_missing_data_path_names_the_config_key(coco_mini, tmp_path, child_env, write_config):
    cfg = write_config(tmp_path / "c.yaml", coco_mini, tmp_path / "out")
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train_images"] = "images/no_such_folder"
    cfg.write_text(yaml.safe_dump(raw))
    res = subprocess.run(_dspose("train", str(cfg)), env=child_env(), capture_output=True, text=True)
    assert res.returncode == 2
    assert "data.train_images" in res.stderr and "no_such_folder" in res.stderr


def test_unknown_config_key_is_reported_by_the_command(tmp_path, child_env):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("optim:\n  learning_rate: 0.1\n")
    res = subprocess.run(_dspose("train", str(cfg)), env=child_env(), capture_output=True, text=True)
    assert res.returncode == 2 and "typo.yaml" in res.stderr and "learning_rate" in res.stderr
