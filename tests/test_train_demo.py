"""The demo end to end at toy size: topology, training, held-out table against baselines, figures, checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dspose_graph.cli.demo import START_ROW, demo_milestones, metric_table, resolve_init, verdict
from dspose_graph.models.checkpoint import load_checkpoint


def test_demo_milestones_stay_inside_the_run():
    assert demo_milestones(1) == [] and demo_milestones(2) == []
    assert demo_milestones(15) == [14] and demo_milestones(30) == [27]


def test_metric_table_lists_the_three_models():
    row = {"AP": 0.5, "AP50": 0.6, "AP75": 0.4, "AR": 0.55, "PCK@0.2": 70.0}
    table = metric_table({"mean pose": row, "untrained": row, "trained": row})
    assert table.splitlines()[0].startswith("| model | AP |") and "| trained | 50.0 |" in table


def test_metric_table_and_verdict_with_a_pretrained_start():
    row = {"AP": 0.5, "AP50": 0.6, "AP75": 0.4, "AR": 0.55, "PCK@0.2": 70.0}
    start = {**row, "AP": 0.2, "PCK@0.2": 61.5}
    rows = {"mean pose": row, "untrained": row, START_ROW: start, "trained": {**row, "AP": 0.6, "PCK@0.2": 72.0}}
    names = [line.split("|")[1].strip() for line in metric_table(rows).splitlines()[2:]]
    assert names == ["mean pose", "untrained", START_ROW, "trained"]
    ok, text = verdict(rows)
    assert ok and "changed the pretrained starting point by AP +40.0, PCK@0.2 +10.5" in text


def test_init_choice_follows_the_data():
    assert resolve_init("auto", "dspose_t", real=True) == "dspose_t_synthetic"
    assert resolve_init("auto", "dspose_t", real=False) == ""
    assert resolve_init("auto", "tokenpose_t", real=True) == ""  # no shipped weights for it
    assert resolve_init("random", "dspose_t", real=True) == "" and resolve_init("x.pt", "dspose_t", False) == "x.pt"


def test_verdict_needs_both_baselines_beaten_and_reports_ties():
    base = {"untrained": {"AP": 0.0, "PCK@0.2": 5.8}, "mean pose": {"AP": 0.0, "PCK@0.2": 69.5}}
    ok, text = verdict({**base, "trained": {"AP": 0.0, "PCK@0.2": 72.8}})
    assert ok and "beats both baselines on held-out PCK@0.2" in text and "AP is 0 for all three" in text
    ok, text = verdict({**base, "trained": {"AP": 0.0, "PCK@0.2": 64.2}})
    assert not ok and "does NOT" in text
    ok, _ = verdict({**base, "trained": {"AP": 0.01, "PCK@0.2": 64.2}})
    assert not ok


@pytest.mark.slow
@pytest.mark.parametrize("data", ["lspet", "coco_mini", "synthetic"])
def test_toy_demo_writes_report_figures_and_checkpoint(tmp_path, data, data_root, child_env):
    out = tmp_path / "demo"
    extra = {"lspet": [], "coco_mini": ["--data", str(data_root / "coco_mini")],
             "synthetic": ["--data", "synthetic", "--train-images", "32", "--val-images", "8"]}[data]
    res = subprocess.run([sys.executable, "-m", "dspose_graph", "demo", "--out", str(out), "--minutes", "0.3",
                          "--epochs", "1", "--batch-size", "8", *extra],
                         env={**child_env(), "DSPOSE_DATA": str(data_root)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    report = (out / "report.md").read_text()
    expected = {"lspet": ("LSP Extended", f"| {START_ROW} |", "starting weights: 'dspose_t_synthetic'", "LSP ("),
                "coco_mini": ("real COCO-format data from", f"| {START_ROW} |", "augmentation on"),
                "synthetic": ("synthetic COCO-17", "asked for with --data synthetic", "starting weights: random")}
    for needle in ("| mean pose |", "| untrained |", "| trained |", "group 1:", *expected[data]):
        assert needle in report, needle
    figures = ["topology_lsp.png"] if data == "lspet" else []
    for name in ("report.md", "predictions.png", "adjacency.png", "topology_mpii.png", "topology_coco.png",
                 "train/loss_curve.png", "train/steps.csv", *figures):
        assert (out / name).stat().st_size > 0, name
    state = load_checkpoint(out / "train" / "last.pt")
    assert state["model"]["name"] == "dspose_t" and state["model"]["config"]["normalize"] == "row"
    assert state["schema"]["name"] == {"lspet": "lsp"}.get(data, "coco")
