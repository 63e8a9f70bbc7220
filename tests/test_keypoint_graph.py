"""KeypointGraph: PyG <-> networkx <-> dense <-> file round trips, and batching with PyG's Batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from dspose_graph.graph.keypoint_graph import KeypointGraph
from dspose_graph.graph.feature import edges_to_dense, feature_adjacency
from dspose_graph.topology.files import load_topology
from dspose_graph.topology.schemas import COCO17, MPII16


@pytest.fixture(params=["mpii", "coco"])
def graph(request) -> KeypointGraph:
    return KeypointGraph.from_topology(load_topology(request.param), a=0.85, x=torch.randn(17 if request.param == "coco" else 16, 5))


def test_from_topology_carries_names_groups_and_ap(graph):
    topo = load_topology(graph.schema["name"])
    assert graph.node_names == list(topo.schema.keypoints)
    assert torch.equal(graph.group, torch.as_tensor(topo.labels))
    assert torch.equal(graph.adjacency, torch.as_tensor(topo.adjacency(0.85)))
    k = topo.schema.num_keypoints
    assert graph.num_nodes == k and graph.edge_index.shape == (2, k * k)  # A_p is dense: b > 0 everywhere
    assert graph.provenance["a"] == 0.85 and "source_sha256" in graph.provenance
    assert graph.keypoint_schema() == topo.schema


def test_dense_sparse_round_trip_is_exact(graph):
    assert torch.equal(graph.to_dense(), graph.adjacency)
    sparse = torch.tensor(np.where(np.random.default_rng(0).random((17, 17)) > 0.7, 0.37, 0.0), dtype=torch.float32)
    g = KeypointGraph.from_dense(sparse, COCO17)
    assert torch.equal(g.to_dense(), sparse) and g.edge_index.shape[1] == int((sparse != 0).sum())
    assert torch.equal(g.group, torch.as_tensor(COCO17.group_labels()))


def test_networkx_round_trip(graph):
    g = graph.to_networkx()
    assert g.number_of_nodes() == graph.num_nodes and g.number_of_edges() == graph.edge_index.shape[1]
    assert g.nodes[0]["name"] == graph.node_names[0]
    back = KeypointGraph.from_networkx(g)
    assert torch.equal(back.adjacency, graph.adjacency) and torch.equal(back.edge_index, graph.edge_index)
    assert back.node_names == graph.node_names and torch.equal(back.group, graph.group)
    assert back.schema == graph.schema and back.provenance == graph.provenance


def test_file_round_trip_keeps_exact_floats_and_provenance(graph, tmp_path):
    path = graph.save(tmp_path / "g.json")
    back = KeypointGraph.load(path)
    for key in ("adjacency", "edge_index", "edge_weight", "group", "x"):
        assert torch.equal(getattr(back, key), getattr(graph, key)), key
    assert back.node_names == graph.node_names and back.schema == graph.schema
    assert back.provenance == json.loads(json.dumps(graph.provenance))


def test_feature_adjacency_graph_round_trips():
    x = torch.randn(3, 17, 8, generator=torch.Generator().manual_seed(0))
    a_f = feature_adjacency(x, t=4)
    for b in range(3):
        g = KeypointGraph.from_dense(a_f[b], COCO17, x=x[b])
        assert g.edge_index.shape[1] == 17 * 4 and torch.equal(g.to_dense(), a_f[b])


def test_batch_stacks_adjacency_and_offsets_edges():
    mpii = load_topology("mpii")
    graphs = [KeypointGraph.from_topology(mpii, a=a, x=torch.full((16, 2), a)) for a in (0.75, 0.8, 0.95)]
    batch = Batch.from_data_list(graphs)
    assert batch.num_graphs == 3 and batch.adjacency.shape == (3, 16, 16)
    assert batch.x.shape == (48, 2) and batch.group.shape == (48,)
    assert torch.equal(edges_to_dense(batch.edge_index, batch.edge_weight, 3, 16), batch.adjacency)
    second = batch.get_example(1)
    assert isinstance(second, KeypointGraph)
    assert torch.equal(second.adjacency, graphs[1].adjacency) and torch.equal(second.edge_index, graphs[1].edge_index)
    assert second.node_names == list(MPII16.keypoints)


def test_bad_graph_inputs(tmp_path):
    with pytest.raises(ValueError, match="square"):
        KeypointGraph.from_dense(torch.ones(3, 4))
    with pytest.raises(ValueError, match="schema 'coco' has 17"):
        KeypointGraph.from_dense(torch.ones(16, 16), COCO17)
    with pytest.raises(ValueError, match="groups"):
        KeypointGraph.from_dense(torch.ones(3, 3), groups=np.zeros(4))
    with pytest.raises(FileNotFoundError):
        KeypointGraph.load(tmp_path / "none.json")
    g = KeypointGraph.from_topology(load_topology("coco"))
    d = g.to_dict()
    d["edge_index"] = d["edge_index"][:1]
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="t.json"):
        KeypointGraph.load(tmp_path / "t.json")
    (tmp_path / "m.json").write_text("[")
    with pytest.raises(ValueError, match="malformed JSON"):
        KeypointGraph.load(tmp_path / "m.json")
    (tmp_path / "f.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="not a keypoint graph file"):
        KeypointGraph.load(tmp_path / "f.json")
