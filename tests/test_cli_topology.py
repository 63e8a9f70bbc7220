"""``dspose topology``: clusters printed by name, graph file and figures written, clear errors, no partial output."""

from __future__ import annotations

import argparse

import pytest

from dspose_graph.cli import topology as cli
from dspose_graph.cli.main import main
from dspose_graph.graph.keypoint_graph import KeypointGraph
from dspose_graph.topology.build import format_topology_summary
from dspose_graph.topology.files import load_topology
from dspose_graph.viz.topology import write_topology_files


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_mpii_prints_the_six_clusters_and_writes_files(tmp_path, capsys, mpii_annotations):
    assert run_cli(["--dataset", "mpii", "--annotations", str(mpii_annotations), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mpii: 6 clusters from mpii_annotations.json.gz" in out
    for line in ("thorax, upper_neck, head_top", "l_shoulder, l_elbow, l_wrist", "r_wrist, r_elbow, r_shoulder",
                 "l_knee, l_ankle", "r_ankle, r_knee", "r_hip, l_hip, pelvis"):
        assert line in out
    assert "partition equals the shipped" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["mpii_graph.json", "mpii_mi.png", "mpii_skeleton.png", "mpii_topology.json"]
    assert load_topology(tmp_path / "mpii_topology.json").same_partition(load_topology("mpii"))
    graph = KeypointGraph.load(tmp_path / "mpii_graph.json")
    assert graph.num_nodes == 16 and graph.provenance["a"] == 0.9
    for png in ("mpii_mi.png", "mpii_skeleton.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summary_and_files_from_python(tmp_path):
    topo = load_topology("mpii")
    lines = format_topology_summary(topo, "mpii").splitlines()
    assert lines[0].startswith("mpii: 6 clusters from ") and len(lines) == 8
    assert lines[1:7] == [f"  {i}: {', '.join(group)}" for i, group in enumerate(topo.named_groups)]
    assert lines[7].startswith("  partition equals the shipped ") and lines[7].endswith("shipped MI| = 0.00e+00")
    written = write_topology_files(topo, tmp_path, "x", a=0.8)
    assert [p.name for p in written] == ["x_topology.json", "x_graph.json", "x_mi.png", "x_skeleton.png"]
    assert KeypointGraph.load(tmp_path / "x_graph.json").provenance["a"] == 0.8


def test_coco_through_the_dspose_command(tmp_path, capsys):
    assert main(["topology", "--dataset", "coco", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "coco: 5 clusters" in out
    for line in ("nose, left_eye, right_eye, left_ear, right_ear", "left_shoulder, right_shoulder",
                 "left_elbow, right_elbow, left_wrist, right_wrist", "left_hip, right_hip",
                 "left_knee, right_knee, left_ankle, right_ankle"):
        assert line in out
    assert (tmp_path / "coco_skeleton.png").is_file() and (tmp_path / "coco_mi.png").is_file()


def test_without_raw_data_it_clusters_the_shipped_mi(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DSPOSE_DATA", str(tmp_path / "no-data"))
    assert run_cli(["--dataset", "mpii", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "mpii: 6 clusters from shipped MI" in out and "thorax, upper_neck, head_top" in out


def test_direct_route_on_a_coco_format_file(tmp_path, capsys, data_root):
    path = data_root / "mmpose_fixtures" / "coco" / "test_coco.json"
    assert run_cli(["--dataset", str(path), "--clusters", "4", "--out", str(tmp_path)]) == 0
    assert "test_coco: 4 clusters from test_coco.json" in capsys.readouterr().out
    assert (tmp_path / "test_coco_graph.json").is_file()


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "mpii", "--clusters", "17"], "clusters must be an integer in [1, K=16], got 17"),
    (["--dataset", "mpii", "--clusters", "lots"], "clusters must be a positive integer"),
    (["--dataset", "mpii", "--a", "0.5"], "(0.7, 1)"),
    (["--dataset", "mpii", "--annotations", "/nonexistent/mpii.json.gz"], "/nonexistent/mpii.json.gz does not exist"),
    (["--dataset", "/nonexistent/keypoints.json"], "does not exist"),
    (["--dataset", "lsp"], "unknown dataset 'lsp'"),
])
def test_bad_input_fails_cleanly_with_no_output(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["topology", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
