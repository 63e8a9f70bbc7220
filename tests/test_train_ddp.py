"""DDP through a real ``torchrun --nproc_per_node 2`` (gloo, CPU): metrics equal a single process's, the evaluation
inside DDP training scores rank 0's saved weights, and a non-finite loss stops both ranks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import yaml

from dspose_graph.models.checkpoint import load_checkpoint
from dspose_graph.train.logs import read_csv


def _torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "--module", "dspose_graph", *args]


def _run(cmd: list[str], env: dict[str, str], timeout: float, check: bool = False) -> subprocess.CompletedProcess:
    """``cmd`` in a session of its own; past ``timeout`` seconds the whole session (torchrun and every rank it
    started) is killed and the test fails with the output so far, instead of a rank hung in a collective hanging
    the suite (killing torchrun alone would leave its ranks running)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[2:])} still running after {timeout:.0f} s, killed; stderr:\n{err[-3000:]}")
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(coco_mini, tmp_path, child_env, write_config):
    cfg = write_config(tmp_path / "c.yaml", coco_mini, tmp_path / "one", workers=0, checkpoint_every=0)
    raw = yaml.safe_load(cfg.read_text())
    raw["optim"]["epochs"] = 1
    raw["data"]["limit_train"] = 16
    raw["data"]["limit_val"] = 12
    cfg.write_text(yaml.safe_dump(raw))
    # Training under DDP: 2 ranks x batch 4 over 16 samples = 2 steps, loss averaged over ranks.
    res = _run(_torchrun(2, "train", str(cfg), "--set", f"run.out_dir={tmp_path / 'ddp'}"), child_env(), 600)
    assert res.returncode == 0, res.stderr[-3000:]
    steps = read_csv(tmp_path / "ddp" / "steps.csv")
    assert len(steps) == 2 and all(math.isfinite(float(r["loss"])) for r in steps)
    ckpt = tmp_path / "ddp" / "last.pt"
    state = load_checkpoint(ckpt)
    assert state["world_size"] == 2 and state["global_step"] == 2
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and "AP" in ddp["metrics"]

    # Those weights evaluated by 1 and by 2 processes: the same metrics, and the same as the evaluation inside
    # DDP training (which scored rank 0's weights, BatchNorm statistics too, as last.pt holds them).
    _run([sys.executable, "-m", "dspose_graph", "train", str(cfg), "--eval-only", "--resume", str(ckpt)], child_env(),
         600, check=True)
    one_eval = json.loads((tmp_path / "one" / "metrics_eval.json").read_text())
    res = _run(_torchrun(2, "train", str(cfg), "--eval-only", "--resume", str(ckpt),
                         "--set", f"run.out_dir={tmp_path / 'two'}"), child_env(), 600)
    assert res.returncode == 0, res.stderr[-3000:]
    two_eval = json.loads((tmp_path / "two" / "metrics_eval.json").read_text())
    assert two_eval["world_size"] == 2 and one_eval["world_size"] == 1
    assert set(two_eval["metrics"]) == set(one_eval["metrics"]) == set(ddp["metrics"]) and "AP" in one_eval["metrics"]
    for k, v in one_eval["metrics"].items():
        assert two_eval["metrics"][k] == pytest.approx(v, abs=1e-9), k
        assert ddp["metrics"][k] == pytest.approx(v, abs=1e-9), k

    # A diverging run (lr 1e30: step 1's update makes step 2's loss non-finite), losses read only at the epoch
    # end: both ranks stop there with the error, nothing is saved.
    res = _run(_torchrun(2, "train", str(cfg), "--set", f"run.out_dir={tmp_path / 'nan'}",
                         "--set", "optim.lr=1e30", "--set", "run.log_every=0"), child_env(), 600)
    assert res.returncode != 0
    # Each rank says so (torchrun's error-file report repeats the message per rank as well).
    assert res.stderr.count("loss became nan at global step 2") >= 2, res.stderr[-3000:]
    assert not (tmp_path / "nan" / "last.pt").exists()


@pytest.mark.slow
def test_experiment_runs_two_rows_under_torchrun(synthetic_coco, tmp_path, child_env):
    rows = tmp_path / "rows"
    rows.mkdir()
    for name, model in (("smoke_a", "dspose_t"), ("smoke_b", "tokenpose_t")):
        (rows / f"{name}.yaml").write_text(yaml.safe_dump({
            "model": {"name": model}, "data": {"kind": "coco", "augment": False},
            "optim": {"epochs": 300, "batch_size": 2, "milestones": [200, 260]},
            "eval": {"every": 0, "flip_test": False, "batch_size": 4},
            "run": {"workers": 0, "progress": False, "tensorboard": False, "device": "cpu", "dist_timeout": 5},
            "paper": {"table": "smoke", "row": name, "metric": "AP"}}))
    # Row 2 used to wait forever in init_process_group after row 1 had left the group; accumulation runs DDP's
    # no_sync micro-batches.
    res = _run(_torchrun(2, "experiment", "smoke", "--experiments", str(rows), "--data", str(synthetic_coco),
                         "--epochs", "1", "--limit", "8", "--out", str(tmp_path / "out"), "--set", "optim.accumulate=2"),
               child_env(), 900)
    assert res.returncode == 0, res.stderr[-3000:]
    table = read_csv(tmp_path / "out" / "smoke" / "results.csv")
    assert [r["row"] for r in table] == ["smoke_a", "smoke_b"] and all(r["ours"] != "" for r in table)
    for name in ("smoke_a", "smoke_b"):
        state = load_checkpoint(tmp_path / "out" / "smoke" / name / "last.pt")
        # 8 persons / 2 ranks / batch 2 = 2 micro-batches per rank, 2 accumulated = 1 optimiser step.
        assert (state["world_size"], state["global_step"], state["samples_per_step"]) == (2, 1, 4)
    assert res.stdout.count("# Results: smoke") == 1, "rank 0 alone prints the table"
    assert "INFO [rank 0/2]" in res.stderr and "INFO [rank 1/2]" not in res.stderr
