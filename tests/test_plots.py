"""Adjacency figures from a real model on real crops: plotted values, labels, files, CLI, bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from dspose_graph.cli.main import main
from dspose_graph.viz.learned import collect_adjacency
from dspose_graph.data import load_image
from dspose_graph.predict import Predictor
from dspose_graph.viz.adjacency import (
    adjacency_graph,
    mean_skeleton,
    plot_adjacency_heatmaps,
    plot_learned_graph,
    save_figure,
)
from dspose_graph.topology.schemas import COCO17


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "dspose_t.pt", seed=5)


@pytest.fixture(scope="module")
def adjacency(ckpt, coco_mini):
    """The model's adjacency dict on three real COCO person crops."""
    predictor = Predictor(ckpt, flip_test=False)
    ann = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    people = [a for a in ann["annotations"] if a["num_keypoints"] >= 10][:3]
    crops = torch.cat([predictor.crop(load_image(coco_mini / "images" / "val" / files[a["image_id"]]),
                                      np.array([a["bbox"]]))[0] for a in people])
    adj, _ = collect_adjacency(predictor.model, crops, batch_size=2)  # two batches, merged
    return adj


@pytest.fixture(scope="module")
def coco_keypoints(coco_mini) -> np.ndarray:
    ann = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    return np.array([a["keypoints"] for a in ann["annotations"] if a["num_keypoints"] >= 10], dtype=float).reshape(-1, 17, 3)


def test_heatmap_figure_shows_the_model_matrices(adjacency, tmp_path):
    paths = [tmp_path / "adj.png", tmp_path / "adj.pdf"]
    fig = plot_adjacency_heatmaps(adjacency, COCO17, paths, sample=1)
    layers = len(adjacency["A_m"])
    panels = [ax for ax in fig.axes if ax.images and ax.get_xticklabels()]
    assert len(panels) == 4 * layers
    for ax in panels:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(COCO17.keypoints)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(COCO17.keypoints)
    p = float(adjacency["p"])
    for layer in range(layers):
        a_p, a_f1, a_f_mean, a_m_mean = panels[4 * layer: 4 * layer + 4]
        assert f"p = {p:.3f}" in a_p.get_title()
        np.testing.assert_allclose(a_p.images[0].get_array(), adjacency["A_p"].numpy(), atol=1e-6)
        np.testing.assert_allclose(a_f1.images[0].get_array(), adjacency["A_f"][layer][1].numpy(), atol=1e-6)
        np.testing.assert_allclose(a_f_mean.images[0].get_array(), adjacency["A_f"][layer].mean(0).numpy(), atol=1e-6)
        np.testing.assert_allclose(a_m_mean.images[0].get_array(), adjacency["A_m"][layer].mean(0).numpy(), atol=1e-6)
    png = cv2.imread(str(paths[0]))
    assert png is not None and png.shape[1] > 2000
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert "N = 3 samples" in fig._suptitle.get_text()


def test_mean_skeleton_is_scale_and_shift_free():
    base = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0], [1.0, -1.0]])
    instances = np.stack([base * s + t for s, t in ((1.0, (0, 0)), (3.5, (100, 40)), (0.2, (-7, 9)))])
    centred = base - base.mean(0)
    expected = centred / np.sqrt((centred ** 2).sum(1).mean())
    np.testing.assert_allclose(mean_skeleton(instances), expected, atol=1e-12)
    # A keypoint never visible goes to the centroid of the others; visibility comes from column 3.
    with_vis = np.concatenate([instances, np.ones((3, 4, 1))], axis=2)
    with_vis[:, 3] = [0.0, 0.0, 0.0]
    out = mean_skeleton(with_vis)
    np.testing.assert_allclose(out[3], out[:3].mean(0), atol=1e-12)
    with pytest.raises(ValueError, match="two or more visible"):
        mean_skeleton(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        mean_skeleton(np.zeros((4, 2)))


def test_adjacency_graph_symmetrises_and_thresholds():
    m = np.array([[1.0, 0.8, 0.0], [0.2, 1.0, 0.05], [0.0, 0.07, 1.0]])
    g = adjacency_graph(m, min_weight=0.2)
    assert sorted(g.edges(data="weight")) == [(0, 1, pytest.approx(0.5))]
    g = adjacency_graph(m, min_weight=0.1)
    assert sorted((a, b) for a, b in g.edges()) == [(0, 1), (1, 2)]
    assert g[1][2]["weight"] == pytest.approx(0.06)


def test_learned_graph_over_real_mean_skeleton(adjacency, coco_keypoints, tmp_path):
    pos = mean_skeleton(coco_keypoints)
    fig = plot_learned_graph({"A_p": adjacency["A_p"], "A_m layer 2": adjacency["A_m"][-1].mean(0)}, COCO17, pos,
                             tmp_path / "graph.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert "A_p" in titles and "A_m layer 2" in titles
    assert cv2.imread(str(tmp_path / "graph.png")) is not None
    # Without positions the skeleton graph is laid out by networkx.
    plot_learned_graph({"A_p": adjacency["A_p"]}, COCO17, None, tmp_path / "graph.svg")
    assert (tmp_path / "graph.svg").read_text().lstrip().startswith("<?xml")


def test_figure_bad_input(adjacency, tmp_path):
    with pytest.raises(ValueError, match="no 'A_m'"):
        plot_adjacency_heatmaps({"A_p": adjacency["A_p"], "A_f": adjacency["A_f"]}, COCO17)
    with pytest.raises(ValueError, match=r"\(17, 17\)"):
        plot_adjacency_heatmaps(dict(adjacency, A_p=torch.zeros(16, 16)), COCO17)
    with pytest.raises(ValueError, match="sample 3 is out of range"):
        plot_adjacency_heatmaps(adjacency, COCO17, sample=3)
    with pytest.raises(ValueError, match=r"\(17, 2\)"):
        plot_learned_graph({"A_p": adjacency["A_p"]}, COCO17, np.zeros((16, 2)))
    with pytest.raises(ValueError, match="unsupported suffix"):
        save_figure(plot_learned_graph({"A_p": adjacency["A_p"]}, COCO17), tmp_path / "x.jpg")
    assert not list(tmp_path.iterdir())


def test_cli_plot_adjacency_image_and_data(ckpt, coco_mini, data_root, tmp_path, capsys):
    rc = main(["plot", "adjacency", "--weights", str(ckpt), "--image", str(data_root / "lspet" / "images" / "im00002.jpg"),
               "--out", str(tmp_path / "img"), "--formats", "png"])
    assert rc == 0
    assert {p.name for p in (tmp_path / "img").iterdir()} == {"adjacency.png", "learned_graph.png", "adjacency.json"}
    assert cv2.imread(str(tmp_path / "img" / "learned_graph.png")) is not None
    config = tmp_path / "cfg.yaml"
    config.write_text(f"model: {{name: dspose_t}}\ndata: {{kind: coco, root: {coco_mini}}}\n")
    rc = main(["plot", "adjacency", "--weights", str(ckpt), "--data", str(config), "--num", "3",
               "--out", str(tmp_path / "data"), "--formats", "pdf"])
    assert rc == 0
    record = json.loads((tmp_path / "data" / "adjacency.json").read_text())
    model = Predictor(ckpt).model
    assert record["num_samples"] == 3 and record["mean_skeleton_source"] == "ground-truth"
    np.testing.assert_allclose(record["A_p"], model.head.a_p.numpy(), atol=1e-5)
    assert record["p"] == pytest.approx(model.head.p.detach().reshape(-1).tolist())
    assert (tmp_path / "data" / "learned_graph.pdf").read_bytes()[:5] == b"%PDF-"
    capsys.readouterr()
    rc = main(["plot", "adjacency", "--weights", str(ckpt), "--image", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "nope.jpg" in capsys.readouterr().err
    rc = main(["plot", "adjacency", "--weights", str(ckpt), "--data", str(config), "--out", str(tmp_path / "x"),
               "--formats", "gif"])
    assert rc == 2 and "--formats" in capsys.readouterr().err


def test_cli_plot_topology(tmp_path):
    assert main(["plot", "topology", "--topology", "coco", "--out", str(tmp_path), "--formats", "png"]) == 0
    assert (tmp_path / "topology_skeleton.png").is_file()
    assert main(["plot", "topology", "--topology", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2


def test_cli_plot_adjacency_of_a_model_without_graph_head_is_one_clear_error(tmp_path, capsys, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "tokenpose_t.pt", "tokenpose_t")
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), np.full((128, 96, 3), 127, np.uint8))
    rc = main(["plot", "adjacency", "--weights", str(ckpt), "--image", str(image), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "has no graph head" in err and "tokenpose_t" in err
    assert not (tmp_path / "out").exists()
