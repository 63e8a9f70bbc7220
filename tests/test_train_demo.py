"""The demo end to end at toy size: topology, training, held-out table against baselines, figures, checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dspose_graph.cli.demo import demo_milestones, metric_table, verdict
from dspose_graph.train.checkpoint import load_checkpoint

from test_train_resume import _env


def test_demo_milestones_stay_inside_the_run():
    assert demo_milestones(1) == [] and demo_milestones(2) == []
    assert demo_milestones(15) == [14] and demo_milestones(30) == [27]


def test_metric_table_lists_the_three_models():
    row = {"AP": 0.5, "AP50": 0.6, "AP75": 0.4, "AR": 0.55, "PCK@0.2": 70.0}
    table = metric_table({"mean pose": row, "untrained": row, "trained": row})
    assert table.splitlines()[0].startswith("| model | AP |") and "| trained | 50.0 |" in table


def test_verdict_needs_both_baselines_beaten_and_reports_ties():
    base = {"untrained": {"AP": 0.0, "PCK@0.2": 5.8}, "mean pose": {"AP": 0.0, "PCK@0.2": 69.5}}
    ok, text = verdict({**base, "trained": {"AP": 0.0, "PCK@0.2": 72.8}})
    assert ok and "beats both baselines on held-out PCK@0.2" in text and "AP is 0 for all three" in text
    ok, text = verdict({**base, "trained": {"AP": 0.0, "PCK@0.2": 64.2}})
    assert not ok and "does NOT" in text
    ok, _ = verdict({**base, "trained": {"AP": 0.01, "PCK@0.2": 64.2}})
    assert not ok


@pytest.mark.slow
def test_toy_demo_writes_report_figures_and_checkpoint(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "dspose_graph", "demo", "--out", str(out), "--minutes", "0.3",
                          "--epochs", "1", "--train-images", "32", "--val-images", "8", "--batch-size", "8"],
                         env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    report = (out / "report.md").read_text()
    for needle in ("| mean pose |", "| untrained |", "| trained |", "synthetic COCO-17", "group 1:"):
        assert needle in report, needle
    for name in ("report.md", "predictions.png", "adjacency.png", "topology_mpii.png", "topology_coco.png",
                 "train/loss_curve.png", "train/steps.csv"):
        assert (out / name).stat().st_size > 0, name
    state = load_checkpoint(out / "train" / "last.pt")
    assert state["model"]["name"] == "dspose_t" and state["model"]["config"]["normalize"] == "row"
