"""The demo: its pieces (swap rate, table, verdict, settings) on inline numbers, and every preset end to end on a
few generated people (no data folder needed); real data end to end at toy size when the shared data is there."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dspose_graph.demo import DemoOptions, run_demo
from dspose_graph.demo.baselines import START_ROW, goal_lines, metric_table, swap_rate, verdict
from dspose_graph.demo.data import resolve_data
from dspose_graph.demo.run import body_init, body_start, demo_milestones, resolve_init, train_config, with_defaults
from dspose_graph.models.checkpoint import load_checkpoint
from dspose_graph.models.presets import create_model
from dspose_graph.weights import resolve_weights
from dspose_graph.topology.schemas import COCO17, KeypointSchema

REPO = Path(__file__).resolve().parents[1]

ROW = {"AP": 0.5, "AP50": 0.6, "AP75": 0.4, "AR": 0.55, "PCK@0.2": 70.0, "swap": 4.0}


def test_demo_milestones_stay_inside_the_run():
    assert demo_milestones(1) == [] and demo_milestones(2) == []
    assert demo_milestones(15) == [14] and demo_milestones(30) == [27]


def test_swap_rate_counts_crossed_pairs_only_where_both_joints_are_labelled():
    schema = KeypointSchema(name="toy", keypoints=("nose", "left_hand", "right_hand", "left_foot", "right_foot"),
                            skeleton=(), flip_pairs=((1, 2), (3, 4)))
    gt = np.array([[[50, 10, 2], [40, 50, 2], [60, 50, 2], [45, 90, 2], [55, 90, 1]],
                   [[50, 10, 2], [40, 50, 2], [60, 50, 0], [45, 90, 2], [55, 90, 2]]], dtype=float)
    straight = gt[..., :2].copy()
    crossed = straight[:, [0, 2, 1, 4, 3]]
    assert swap_rate(straight, gt, schema) == 0.0
    # Person 2's hands are not both labelled: 3 pairs count, all crossed.
    assert swap_rate(crossed, gt, schema) == 100.0
    half = straight.copy()
    half[0] = crossed[0]  # person 1 crossed (2 pairs), person 2 straight (its 1 countable pair)
    assert swap_rate(half, gt, schema) == pytest.approx(200 / 3)
    # Both joints at the midpoint: neither assignment is closer, so not a swap.
    mid = straight.copy()
    mid[:, 1:3] = mid[:, 1:3].mean(1, keepdims=True)
    assert swap_rate(mid, gt, schema) == 0.0
    with pytest.raises(ValueError, match="no left/right pairs"):
        swap_rate(straight, gt, KeypointSchema(name="k2", keypoints=("a", "b"), skeleton=(), flip_pairs=()))


def test_metric_table_and_verdict_with_a_pretrained_start():
    start = {**ROW, "AP": 0.2, "PCK@0.2": 61.5}
    rows = {"mean pose": ROW, "untrained": ROW, START_ROW: start, "trained": {**ROW, "AP": 0.6, "PCK@0.2": 72.0}}
    table = metric_table(rows)
    assert table.splitlines()[0] == "| model | AP | AP50 | AP75 | AR | PCK@0.2 | torso_PCK@0.2 | swap | mirror |"
    assert "| trained | 60.0 | 60.0 | 40.0 | 55.0 | 72.0 | n/a | 4.0 | n/a |" in table  # ROW has no torso figure
    names = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert names == ["mean pose", "untrained", START_ROW, "trained"]
    ok, text = verdict(rows)
    assert ok and "changed the starting weights' figures by AP +40.0, PCK@0.2 +10.5" in text
    assert "swap rate of the trained model: 4.0%" in text


def test_verdict_needs_both_baselines_beaten_and_reports_ties():
    base = {"untrained": {"AP": 0.0, "PCK@0.2": 5.8}, "mean pose": {"AP": 0.0, "PCK@0.2": 69.5}}
    ok, text = verdict({**base, "trained": {"AP": 0.0, "PCK@0.2": 72.8, "swap": 1.0}})
    assert ok and "beats both baselines on held-out PCK@0.2" in text and "AP is 0 for all three" in text
    ok, text = verdict({**base, "trained": {"AP": 0.0, "PCK@0.2": 64.2, "swap": 1.0}})
    assert not ok and "does NOT" in text
    ok, _ = verdict({**base, "trained": {"AP": 0.01, "PCK@0.2": 64.2, "swap": 1.0}})
    assert not ok


def test_goal_lines_state_each_target_and_whether_it_is_met():
    rows = {"mean pose": {**ROW, "PCK@0.2": 69.5}, "trained": {**ROW, "AP": 0.31, "PCK@0.2": 84.0, "swap": 12.5}}
    assert goal_lines(rows) == ["- OKS AP >= 25: 31.0 (met)", "- PCK@0.2 >= mean pose + 15: 84.0 vs 84.5 (NOT met)",
                                "- left/right swap rate <= 10%: 12.5% (NOT met)"]


def test_init_choice_follows_the_data():
    # --init auto: the shipped body (backbone + Transformer) with a fresh head, real weights for photographs.
    assert resolve_init("auto", "dspose_t", real=True) == "" and resolve_init("auto", "dspose_t", real=False) == ""
    assert body_init("auto", "dspose_t", real=True) == "dspose_t_lspet"
    assert body_init("auto", "dspose_t", real=False) == "dspose_t_synthetic"
    assert body_init("random", "dspose_t", real=False) == "" and body_init("x.pt", "dspose_t", real=True) == ""
    assert body_init("auto", "tokenpose_t", real=True) == ""  # no shipped weights for it
    assert resolve_init("random", "dspose_t", real=True) == "" and resolve_init("x.pt", "dspose_t", False) == "x.pt"


def test_real_data_goals_and_the_torso_column():
    base = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR": 0.0, "PCK@0.2": 50.0, "swap": 30.0}
    rows = {"mean pose": {**base, "torso_PCK@0.2": 20.0}, "untrained": {**base, "torso_PCK@0.2": 1.0},
            START_ROW: {**base, "torso_PCK@0.2": 72.5},
            "trained": {**base, "torso_PCK@0.2": 71.0, "swap": 4.0}}
    assert goal_lines(rows, real=True) == [
        "- torso PCK@0.2 >= 70: 71.0 (met)", "- left/right swap rate <= 10%: 4.0% (met)",
        f"- torso PCK@0.2 above every baseline row: 71.0 vs 72.5 ({START_ROW}) (NOT met)"]
    table = metric_table(rows)
    assert "| torso_PCK@0.2 |" in table.splitlines()[0] + "|" and "| 71.0 |" in table
    del rows["trained"]["torso_PCK@0.2"]  # a skeleton without shoulders and hips has no torso column
    assert "| n/a |" in metric_table(rows)


def test_generated_people_are_never_mirrored(tmp_path):
    """A flip keeps the side colours but swaps the labels: no flip augmentation, no flip test on them."""
    options = with_defaults(DemoOptions(out=tmp_path, data="synthetic", augment=True, train_images=2, val_images=1),
                            real=False)
    data = resolve_data("synthetic", tmp_path, sigma=3.0, augment=True, train_images=2, val_images=1)
    config = train_config(options, data)
    assert not data.real and not data.mirror_safe and data.generator
    assert config.data.augment is False and config.eval.flip_test is False
    assert options.epochs == 20 and options.lr == 1e-3
    assert options.conv == "graphconv" and config.model.overrides["conv"] == "graphconv"


def test_demo_convolution_defaults_follow_the_data_and_the_head():
    """GraphConv for a graph head on generated people and on photographs; an MLP head and an explicit --conv untouched."""
    assert with_defaults(DemoOptions(model="dspose_t"), real=True).conv == "graphconv"
    assert with_defaults(DemoOptions(model="dspose_t"), real=False).conv == "graphconv"
    assert with_defaults(DemoOptions(model="tokenpose_t"), real=False).conv is None
    assert with_defaults(DemoOptions(model="dspose_t", conv="gat"), real=False).conv == "gat"


def _pair_distance_ratio(conv: str, seed: int) -> float:
    """Mean distance between the heatmaps of a left joint and its right partner over the mean distance between
    any two joints, for a freshly built dspose_t (drawn from ``seed``) on random crops."""
    torch.manual_seed(seed)
    model = create_model("dspose_t", conv=conv).eval()
    with torch.no_grad():
        heat = model(torch.randn(4, 3, 128, 96)).flatten(2)
    dist = torch.cdist(heat, heat)
    pairs = torch.stack([dist[:, i, j] for i, j in COCO17.flip_pairs], 1).mean()
    return float(pairs / (dist.sum((1, 2)).mean() / (17 * 16)))


def test_demo_convolution_breaks_the_graph_heads_symmetric_start():
    """The paper's A_m X W starts with each left/right pair nearly on one heatmap; GraphConv's root term not.

    One initialisation's ratio scatters (A_m X W: 0.10 to 0.52 over seeds 0-5 on torch 2.3.1, 0.16 to 0.33 on
    2.14.1, whose generators draw the initial weights differently; GraphConv 0.88 to 1.06), so the claim is
    checked on six: A_m X W below GraphConv for every seed, and far apart on average."""
    seeds = range(6)
    ours = [_pair_distance_ratio("dspose", s) for s in seeds]
    graphconv = [_pair_distance_ratio("graphconv", s) for s in seeds]
    assert all(a < g for a, g in zip(ours, graphconv)), (ours, graphconv)
    assert sum(ours) / len(ours) < 0.4 and sum(graphconv) / len(graphconv) > 0.8, (ours, graphconv)


def test_body_start_keeps_the_shipped_body_and_draws_a_new_head(tmp_path):
    options = with_defaults(DemoOptions(out=tmp_path, data="synthetic"), real=False)
    config = train_config(options, resolve_data("synthetic", tmp_path, sigma=3.0, augment=False, train_images=2,
                                                val_images=1))
    shipped = load_checkpoint(resolve_weights("dspose_t_synthetic"))["state_dict"]
    start = load_checkpoint(body_start("dspose_t_synthetic", config, tmp_path / "start.pt", seed=0))
    assert start["model"]["config"]["conv"] == "graphconv"
    body = [k for k in shipped if not k.startswith("head.")]
    assert body and all(torch.equal(start["state_dict"][k], shipped[k]) for k in body)
    assert any(k.startswith("head.") and k not in shipped for k in start["state_dict"])  # GraphConv's own weights
    wide = dataclasses.replace(config.model, overrides={**config.model.overrides, "dim": 64})
    with pytest.raises(ValueError, match="dspose_t_synthetic.pt: its backbone/Transformer do not fit"):
        body_start("dspose_t_synthetic", dataclasses.replace(config, model=wide), tmp_path / "bad.pt", seed=0)


@pytest.mark.parametrize("model, conv", [("dspose_t", None), ("tokenpose_t", None), ("dspose_t", "gat")])
def test_every_preset_runs_through_the_demo(tmp_path, model, conv):
    out = tmp_path / "demo"
    result = run_demo(DemoOptions(out=out, data="synthetic", model=model, conv=conv, train_images=8, val_images=4,
                                  epochs=1, minutes=0.5, batch_size=4, workers=0))
    report = result.report.read_text()
    graph = model != "tokenpose_t"
    start = "starting weights: backbone + Transformer of 'dspose_t_synthetic'" if graph else "starting weights: random"
    for needle in ("| mean pose |", "| untrained |", "| trained |", "group 1:", "generated people", start,
                   "- occluders: p=0.3 per person", "left/right swap rate <= 10%"):
        assert needle in report, needle
    assert set(result.rows) == {"mean pose", "untrained", "trained"} | ({START_ROW} if graph else set())
    assert 0.0 <= result.rows["trained"]["swap"] <= 100.0
    for name in ("predictions.png", "topology_mpii.png", "topology_coco.png", "train/loss_curve.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "adjacency.png").exists() == graph
    assert ("no adjacency figure: the 'mlp' head" in report) != graph
    if graph:  # README's overview figure is composed from such a run (docs/figures/make_overview.py)
        spec = importlib.util.spec_from_file_location("make_overview", REPO / "docs" / "figures" / "make_overview.py")
        overview = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(overview)
        assert overview.compose(out, tmp_path / "overview.png").stat().st_size > 0
    state = load_checkpoint(out / "train" / "last.pt")
    assert state["model"]["name"] == model
    assert state["model"]["config"]["conv"] == (conv or ("graphconv" if graph else "dspose"))


@pytest.mark.slow
@pytest.mark.parametrize("data", ["lspet", "coco_mini"])
def test_toy_demo_on_real_data_writes_report_figures_and_checkpoint(tmp_path, data, data_root, child_env):
    out = tmp_path / "demo"
    extra = {"lspet": [], "coco_mini": ["--data", str(data_root / "coco_mini")]}[data]
    env = {**child_env(), "DSPOSE_DATA": str(data_root)}
    res = subprocess.run([sys.executable, "-m", "dspose_graph", "demo", "--out", str(out), "--minutes", "0.3", "--steps", "4",
                          "--epochs", "1", "--batch-size", "8", *extra], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    report = (out / "report.md").read_text()
    expected = {"lspet": ("LSP Extended", "backbone + Transformer of 'dspose_t_lspet'", "LSP (", "torso_PCK@0.2",
                          "Goals the demo sets itself on this data"),
                "coco_mini": ("real COCO-format data from", "augmentation on")}
    for needle in ("| mean pose |", "| untrained |", f"| {START_ROW} |", "| trained |", "flip test", *expected[data]):
        assert needle in report, needle
    assert "Goals the demo sets itself on this data" in report
    figures = ["topology_lsp.png"] if data == "lspet" else []
    for name in ("report.md", "predictions.png", "adjacency.png", "topology_mpii.png", "topology_coco.png",
                 "train/loss_curve.png", "train/steps.csv", *figures):
        assert (out / name).stat().st_size > 0, name
    state = load_checkpoint(out / "train" / "last.pt")
    assert state["model"]["name"] == "dspose_t" and state["model"]["config"]["normalize"] == "row"
    assert state["schema"]["name"] == {"lspet": "lsp"}.get(data, "coco")
