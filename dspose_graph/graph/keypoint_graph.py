r"""The keypoint graph as a PyG object: nodes are keypoints, edges the non-zero entries of an adjacency.

A :class:`KeypointGraph` carries the node names, the schema, the group label of every node, the
``edge_index``/``edge_weight`` of the adjacency and the dense adjacency itself, so that the dense and
the sparse view can always be checked against each other. The edge convention is the one of
:func:`dspose_graph.graph.feature.dense_to_edges`: ``adj[i, j]`` is the weight with which node i aggregates
node j, i.e. the message ``j -> i``, stored as ``edge_index[:, e] = (j, i)``.

Shapes:
    K: keypoints (nodes), E: edges, C: node feature channels, B: graphs in a batch.
    ``edge_index``: ``(2, E)``; ``edge_weight``: ``(E,)``; ``adjacency``: ``(K, K)`` per graph, stacked to
    ``(B, K, K)`` by :class:`torch_geometric.data.Batch`; ``group``: ``(K,)``; ``x``: ``(K, C)`` or absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from dspose_graph.graph.feature import dense_to_edges, edges_to_dense
from dspose_graph.topology.files import PhysicalTopology
from dspose_graph.io import atomic_write_json, read_json
from dspose_graph.topology.schemas import KeypointSchema

FORMAT = "dspose-keypoint-graph"
FORMAT_VERSION = 1


class KeypointGraph(Data):
    """A skeleton graph (PyG ``Data``) built from a dense ``(K, K)`` adjacency; see the module docstring."""

    def __cat_dim__(self, key: str, value: Any, *args, **kwargs) -> Any:
        # Each graph's dense adjacency gets its own batch dimension: (B, K, K), not (B*K, K).
        if key == "adjacency":
            return None
        return super().__cat_dim__(key, value, *args, **kwargs)

    @classmethod
    def from_dense(cls, adj: Tensor | np.ndarray, schema: KeypointSchema | None = None, x: Tensor | None = None,
                   groups: Tensor | np.ndarray | None = None, provenance: dict[str, Any] | None = None) -> "KeypointGraph":
        """Graph of the non-zero entries of ``adj (K, K)``; ``groups`` default to the schema's paper groups."""
        adj = torch.as_tensor(adj, dtype=torch.float32)
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adjacency must be a square (K, K) matrix, got shape {tuple(adj.shape)}")
        k = adj.shape[0]
        if schema is not None and schema.num_keypoints != k:
            raise ValueError(f"adjacency is {k}x{k} but schema {schema.name!r} has {schema.num_keypoints} keypoints")
        if x is not None and x.shape[0] != k:
            raise ValueError(f"node features x have {x.shape[0]} rows; expected K={k}")
        if groups is None and schema is not None and schema.groups is not None:
            groups = schema.group_labels()
        edge_index, edge_weight = dense_to_edges(adj)
        graph = cls(x=x, edge_index=edge_index, edge_weight=edge_weight, adjacency=adj, num_nodes=k)
        graph.node_names = list(schema.keypoints) if schema is not None else [str(i) for i in range(k)]
        graph.schema = schema.to_dict() if schema is not None else None
        if groups is not None:
            groups = torch.as_tensor(np.asarray(groups), dtype=torch.long)
            if groups.shape != (k,):
                raise ValueError(f"groups have shape {tuple(groups.shape)}; expected ({k},)")
            graph.group = groups
        graph.provenance = dict(provenance or {})
        return graph

    @classmethod
    def from_topology(cls, topo: PhysicalTopology, a: float = 0.9, x: Tensor | None = None) -> "KeypointGraph":
        """Graph of a physical topology's A_p (Eq. 4) with its clusters as groups."""
        return cls.from_dense(topo.adjacency(a), topo.schema, x=x, groups=topo.labels,
                              provenance={**topo.provenance, "a": a})

    def keypoint_schema(self) -> KeypointSchema | None:
        return None if self.schema is None else KeypointSchema.from_dict(self.schema)

    def to_dense(self) -> Tensor:
        """``(K, K)`` adjacency rebuilt from ``edge_index``/``edge_weight`` (equals ``adjacency`` exactly)."""
        return edges_to_dense(self.edge_index, self.edge_weight, 1, self.num_nodes)[0]

    def to_networkx(self) -> nx.DiGraph:
        """Directed networkx graph: node attributes ``name``/``group``, edge attribute ``weight`` (j -> i)."""
        g = nx.DiGraph(schema=self.schema, provenance=self.provenance)
        group = getattr(self, "group", None)
        for i, name in enumerate(self.node_names):
            attrs = {"name": name}
            if group is not None:
                attrs["group"] = int(group[i])
            g.add_node(i, **attrs)
        for (src, dst), w in zip(self.edge_index.t().tolist(), self.edge_weight.tolist()):
            g.add_edge(src, dst, weight=w)
        return g

    @classmethod
    def from_networkx(cls, g: nx.DiGraph) -> "KeypointGraph":
        """Inverse of :meth:`to_networkx` (nodes must be ``0..K-1``)."""
        k = g.number_of_nodes()
        if sorted(g.nodes) != list(range(k)):
            raise ValueError(f"networkx graph nodes must be 0..{k - 1}, got {sorted(g.nodes)[:5]}...")
        adj = torch.zeros(k, k)
        for src, dst, w in g.edges(data="weight", default=1.0):
            adj[dst, src] = w
        schema_dict = g.graph.get("schema")
        schema = KeypointSchema.from_dict(schema_dict) if schema_dict else None
        groups = None
        if all("group" in g.nodes[i] for i in range(k)):
            groups = np.array([g.nodes[i]["group"] for i in range(k)])
        graph = cls.from_dense(adj, schema, groups=groups, provenance=g.graph.get("provenance"))
        graph.node_names = [g.nodes[i].get("name", str(i)) for i in range(k)]
        return graph

    def to_dict(self) -> dict[str, Any]:
        group = getattr(self, "group", None)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema": self.schema,
            "node_names": list(self.node_names),
            "groups": None if group is None else group.tolist(),
            "adjacency": self.adjacency.tolist(),
            "edge_index": self.edge_index.tolist(),
            "edge_weight": self.edge_weight.tolist(),
            "x": None if self.x is None else self.x.tolist(),
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write the graph as JSON (atomically); floats are stored exactly (float32 -> JSON -> float32)."""
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "KeypointGraph":
        path = Path(path)
        d = read_json(path, "graph file")
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a keypoint graph file (expected format {FORMAT!r} version {FORMAT_VERSION})")
        try:
            schema = KeypointSchema.from_dict(d["schema"]) if d.get("schema") else None
            x = None if d.get("x") is None else torch.tensor(d["x"], dtype=torch.float32)
            graph = cls.from_dense(torch.tensor(d["adjacency"], dtype=torch.float32), schema, x=x,
                                   groups=None if d.get("groups") is None else np.asarray(d["groups"]),
                                   provenance=d.get("provenance"))
            graph.node_names = list(d["node_names"])
            stored = torch.tensor(d["edge_index"], dtype=torch.long).reshape(2, -1)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{path}: invalid keypoint graph ({e})") from None
        if not torch.equal(stored, graph.edge_index):
            raise ValueError(f"{path}: field 'edge_index' does not match the non-zero entries of 'adjacency'")
        return graph
