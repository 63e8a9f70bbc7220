"""``dspose experiment lsp-*`` on real LSPET images at tiny scale: a 2-row x 2-seed table with its statistics,
curves and per-joint PCK; a finished table read again without training; a killed experiment resumed where it
stopped (not started again); a partial table that says what is missing."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from dspose_graph.models import create_model
from dspose_graph.models.checkpoint import load_checkpoint
from dspose_graph.train.ablation import ABLATIONS, run_ablation, write_report
from dspose_graph.train.ablation_report import METRIC, paired_difference

# 16 training persons in batches of 8: 2 steps per epoch, so a 5-step budget is 3 epochs (2, 2, 1 steps), each
# evaluated on 8 held-out persons.
TINY = ["optim.batch_size=8", "eval.batch_size=8", "run.workers=0", "run.checkpoint_every=2", "run.log_every=1"]


def _tiny(data_root: Path, out: Path, **kwargs):
    kwargs.setdefault("overrides", TINY)
    return run_ablation("lsp-table5", out, data=data_root / "lspet", limit=16, **kwargs)


@pytest.mark.slow
def test_two_rows_two_seeds_make_the_table_the_statistics_and_the_figure(tmp_path, data_root):
    out = tmp_path / "lsp-table5"
    results = _tiny(data_root, out, seeds=[0, 1], steps=5, rows=["mlp", "dual"])
    assert sorted((r.row, r.seed) for r in results) == [("dual", 0), ("dual", 1), ("mlp", 0), ("mlp", 1)]
    for r in results:
        assert r.steps == 5 and [p["global_step"] for p in r.curve] == [2, 4, 5] and r.resumed_at == []
        assert 0 <= r.value <= 100 and r.ms_per_step > 0 and r.curve[-1][METRIC] == r.value
    for r in results:  # the recipe's model with the row's head
        model = create_model("dspose_t", schema="lsp", conv="graphconv", head=r.row)
        assert r.params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    values = {(r.row, r.seed): r.value for r in results}
    assert values["mlp", 0] != values["mlp", 1]  # the seed changes the run
    # results.csv holds each run's numbers, results.md their statistics.
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and f"{METRIC}/head_top" in rows[0] and "swap" in rows[0]
    assert {(r["row"], int(r["seed"])): float(r[METRIC]) for r in rows} == pytest.approx(values)
    _, diffs, mean, ci, verdict = paired_difference({s: values["dual", s] for s in (0, 1)},
                                                    {s: values["mlp", s] for s in (0, 1)})
    page = (out / "results.md").read_text()
    mlp_mean, mlp_std = np.mean([values["mlp", s] for s in (0, 1)]), np.std([values["mlp", s] for s in (0, 1)], ddof=1)
    assert f"| MLP (TokenPose) | 2 | {mlp_mean:.1f} +- {mlp_std:.1f} | reference |" in page
    half = 12.706204736174698 * np.std(diffs, ddof=1) / math.sqrt(2)  # t(1) 97.5 %
    assert ci == pytest.approx((mean - half, mean + half))
    assert f"| {mean:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}] | {verdict} |" in page
    assert f"{mean:+.2f} points over 2 paired seed(s)" in page and "| 74.7 |" in page and "| 75.1 |" in page
    assert "## Per-joint torso PCK@0.2" in page and "Every requested run has finished." in page
    assert "`dspose experiment lsp-table5`" in page and "Budget: 5 optimiser steps" in page
    assert (out / "curves.png").stat().st_size > 10_000
    # One precision for the whole table, resolved once from optim.precision: auto.
    saved = [yaml.safe_load((f / "config.yaml").read_text()) for f in out.glob("*/seed*")]
    assert len({(c["optim"]["precision"], c["eval"]["precision"]) for c in saved}) == 1
    assert saved[0]["optim"]["precision"] != "auto"
    # The same command again reads the finished runs: nothing is trained or rewritten in the run folders.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/last.pt")}
    again = _tiny(data_root, out, seeds=[0, 1], steps=5, rows=["mlp", "dual"])
    assert {(r.row, r.seed): r.value for r in again} == values
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/last.pt")} == stamps
    # Another setting on the same folder is refused, naming what differs.
    with pytest.raises(ValueError, match=r"seed0: this run was made with optim.lr = 0.002, this command asks 0.001"):
        _tiny(data_root, out, seeds=[0], steps=5, rows=["mlp"], overrides=[*TINY, "optim.lr=0.001"])


def _global_step(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["global_step"])
    except (FileNotFoundError, ValueError, RuntimeError, EOFError):
        return -1


@pytest.mark.slow
def test_a_killed_experiment_continues_where_it_stopped(tmp_path, data_root, child_env):
    out = tmp_path / "runs"
    folder = out / "lsp-table5" / "mlp" / "seed0"
    command = [sys.executable, "-m", "dspose_graph.cli.main", "experiment", "lsp-table5", "--rows", "mlp",
               "--seeds", "0", "--steps", "400", "--data", str(data_root / "lspet"), "--limit", "16",
               "--out", str(out), *[a for item in TINY for a in ("--set", item)]]
    env = child_env()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while _global_step(folder / "last.pt") < 4:
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint at step 4 within 10 minutes"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    stopped_at = _global_step(folder / "last.pt")
    assert 4 <= stopped_at < 400 and not (folder / "result.json").exists()
    before = [r for r in csv.DictReader(open(folder / "epochs.csv"))]
    # The partial table says the run is stopped and resumable.
    write_report(ABLATIONS["lsp-table5"], out / "lsp-table5", 400, [0], [("mlp", 0)], "dspose experiment lsp-table5")
    assert "- mlp seed0: stopped, resumable (rerun the command)" in (out / "lsp-table5" / "results.md").read_text()
    # Rerun (a shorter budget, so that the test is short): it resumes from the checkpoint, not from step 0.
    budget = stopped_at + 3
    (result,) = _tiny(data_root, out / "lsp-table5", seeds=[0], steps=budget, rows=["mlp"])
    assert result.resumed_at == [stopped_at] and result.steps == budget
    after = [r for r in csv.DictReader(open(folder / "epochs.csv"))]
    # The epochs finished before the kill are kept as they were (a restart would have rewritten their timings).
    done_before = [r for r in before if int(r["global_step"]) <= stopped_at]
    assert done_before and after[:len(done_before)] == done_before
    steps = [int(r["global_step"]) for r in csv.DictReader(open(folder / "steps.csv"))]
    assert steps == list(range(1, budget + 1))  # one loss per step, each logged once
    assert json.loads((folder / "resumed_at.json").read_text()) == [stopped_at]


def test_an_interrupted_experiment_says_the_same_command_resumes(tmp_path, data_root, monkeypatch):
    """Ctrl-C or SIGTERM inside a run: the interrupt goes on up (same class, so the exit status stays 130 / 143)
    carrying the hint dspose prints: the run that stopped and the command that resumes it."""
    from dspose_graph.process import Terminated
    from dspose_graph.train import ablation

    def stop(*args, **kwargs):
        raise Terminated()

    monkeypatch.setattr(ablation, "run_one", stop)
    with pytest.raises(Terminated, match=r"mlp seed 0 resumes from its last.pt: run `dspose experiment x --rows mlp`"):
        _tiny(data_root, tmp_path / "t", seeds=[0], steps=5, rows=["mlp"], command="dspose experiment x --rows mlp")
