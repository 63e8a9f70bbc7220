"""The sparse graph path's sum aggregation: torch-scatter (the ``scatter`` extra) and PyG's own scatter give the
same outputs and gradients; without torch-scatter the package falls back to PyG's and still runs.

The graph is the shipped COCO topology plus each sample's top-t feature edges, as the DSPose head builds it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from dspose_graph.graph import scatter as scatter_module
from dspose_graph.graph.layers import GraphLayer
from topology.feature import dense_to_edges, feature_adjacency
from topology.files import load_topology

B, K, C_IN, C_OUT = 3, 17, 16, 8
HAS_TORCH_SCATTER = importlib.util.find_spec("torch_scatter") is not None


@pytest.fixture(scope="module")
def graph() -> tuple[torch.Tensor, torch.Tensor]:
    """Node features ``(B, K, C_IN)`` and A_m ``(B, K, K)`` = 0.7 A_p(COCO) + top-4 cosine feature graph."""
    x = torch.randn(B, K, C_IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_p = torch.from_numpy(load_topology("coco").adjacency(0.9)).double()
    return x, 0.7 * a_p + feature_adjacency(x, 4)


def _sparse_layer() -> GraphLayer:
    torch.manual_seed(1)
    layer = GraphLayer(C_IN, C_OUT, conv="dspose", activation="gelu", backend="sparse").double()
    with torch.no_grad():  # a non-zero bias and LayerNorm so that every parameter's gradient is compared
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


def _outputs_and_grads(backend: str, x: torch.Tensor, adj: torch.Tensor, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(scatter_module, "SCATTER_BACKEND", backend)
    layer = _sparse_layer()
    x = x.clone().requires_grad_(True)
    adj = adj.clone().requires_grad_(True)
    out = layer(x, adj)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(), [x, adj, *layer.parameters()])
    return out.detach(), grads


def test_pyg_scatter_sums_rows_as_a_one_hot_matrix_product():
    gen = torch.Generator().manual_seed(2)
    src = torch.randn(40, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 9, (40,), generator=gen)
    index[index == 4] = 5  # row 4 receives nothing and must stay zero; row 10 lies past every index
    out = scatter_module.SCATTER_SUM["pyg"](src, index, 11)
    one_hot = torch.nn.functional.one_hot(index, 11).double().t()
    torch.testing.assert_close(out, one_hot @ src)
    assert out[4].abs().sum() == 0 and out[10].abs().sum() == 0
    (grad,) = torch.autograd.grad((out * torch.arange(11.0, dtype=out.dtype)[:, None]).sum(), src)
    torch.testing.assert_close(grad, index.double()[:, None].expand(-1, 5))


def test_backend_is_torch_scatter_exactly_when_it_is_installed():
    assert scatter_module.SCATTER_BACKEND == ("torch_scatter" if HAS_TORCH_SCATTER else "pyg")
    assert "pyg" in scatter_module.SCATTER_SUM


@pytest.mark.skipif(not HAS_TORCH_SCATTER, reason="torch-scatter is not installed (extra `scatter`): "
                                                 "PyG's scatter is the only implementation here")
def test_torch_scatter_and_pyg_scatter_give_the_same_outputs_and_gradients(graph, monkeypatch):
    x, adj = graph
    edge_index, _ = dense_to_edges(adj)
    assert edge_index.shape[1] > B * K  # many messages per node: the sum actually adds
    out_ts, grads_ts = _outputs_and_grads("torch_scatter", x, adj, monkeypatch)
    out_pyg, grads_pyg = _outputs_and_grads("pyg", x, adj, monkeypatch)
    assert out_ts.abs().max() > 0.1
    torch.testing.assert_close(out_ts, out_pyg, rtol=1e-12, atol=1e-12)
    for g_ts, g_pyg in zip(grads_ts, grads_pyg):
        assert g_ts is not None and g_ts.abs().max() > 0
        torch.testing.assert_close(g_ts, g_pyg, rtol=1e-12, atol=1e-12)


def test_without_torch_scatter_the_sparse_path_uses_pyg_and_equals_dense(child_env):
    """A fresh interpreter where ``import torch_scatter`` fails: the fallback loads and matches the dense path."""
    code = (
        "import sys; sys.modules['torch_scatter'] = None\n"
        "import torch\n"
        "from dspose_graph.graph import scatter\n"
        "from dspose_graph.graph.layers import GraphLayer\n"
        "assert scatter.SCATTER_BACKEND == 'pyg', scatter.SCATTER_BACKEND\n"
        "torch.manual_seed(0)\n"
        "sparse = GraphLayer(8, 4, backend='sparse').double()\n"
        "dense = GraphLayer(8, 4, backend='dense').double()\n"
        "dense.load_state_dict(sparse.state_dict())\n"
        "x = torch.randn(2, 5, 8, dtype=torch.float64)\n"
        "adj = torch.rand(2, 5, 5, dtype=torch.float64) * (torch.rand(2, 5, 5) > 0.4)\n"
        "torch.testing.assert_close(sparse(x, adj), dense(x, adj))\n"
        "print('fallback ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fallback ok" in done.stdout
