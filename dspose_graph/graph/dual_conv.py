r"""The paper's graph convolution (DSPose Eq. (9)) with a dense batched and a sparse message-passing path.

Shapes (this module):
    B: graphs in the batch, K: nodes (keypoints) per graph, N = B*K: nodes of a PyG batch, E: edges,
    F_in / F_out: channels.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from dspose_graph.graph.scatter import scatter_sum


class DualSpaceConv(MessagePassing):
    r"""The linear part of DSPose's graph layer, Eq. (9) without the LayerNorm and activation.

    .. math::
        \mathbf{X}' = \mathbf{A}_m \mathbf{X} \mathbf{W} + \mathbf{b}, \qquad
        \mathbf{x}'_i = \sum_{j} A_m[i, j]\, \mathbf{W}^\top \mathbf{x}_j + \mathbf{b},

    where :math:`\mathbf{A}_m = p\,\mathbf{A}_p + \mathbf{A}_f` (Eq. (8)) is a dense per-sample ``(K, K)``
    matrix (dense path) or the same matrix given as ``edge_index``/``edge_weight`` (sparse path; the edge
    ``j -> i`` carries ``A_m[i, j]``). The full layer :math:`\sigma(\mathbf{A}_m\,\mathrm{LN}(\mathbf{H})
    \mathbf{W})` is assembled by :class:`dspose_graph.graph.layers.GraphLayer`. Edge weights are used.

    Args:
        in_channels: F_in.
        out_channels: F_out.
        bias: add a learnable bias after aggregation.

    Shapes:
        - **dense input:** x ``(B, K, F_in)``, adj ``(B, K, K)``
        - **sparse input:** x ``(N, F_in)``, edge_index ``(2, E)``, edge_weight ``(E,)``
        - **output:** ``(B, K, F_out)`` (dense) or ``(N, F_out)`` (sparse)
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(aggr="add")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.lin = nn.Linear(in_channels, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.trunc_normal_(self.lin.weight, std=0.02)
        if self.lin.bias is not None:
            nn.init.zeros_(self.lin.bias)

    def forward(self, x: Tensor, adj: Tensor | None = None, edge_index: Tensor | None = None,
                edge_weight: Tensor | None = None) -> Tensor:
        bias = self.lin.bias
        h = x @ self.lin.weight.t()
        if adj is not None:
            out = adj @ h
        else:
            out = self.propagate(edge_index, x=h, edge_weight=edge_weight)
        return out if bias is None else out + bias

    def message(self, x_j: Tensor, edge_weight: Tensor | None) -> Tensor:
        return x_j if edge_weight is None else edge_weight.unsqueeze(-1) * x_j

    def aggregate(self, inputs: Tensor, index: Tensor, ptr: Tensor | None = None,
                  dim_size: int | None = None) -> Tensor:
        # One sum over all graphs of the batch: torch-scatter's fused kernel when installed, else PyG's.
        rows = dim_size if dim_size is not None else int(index.max()) + 1 if index.numel() else 0
        return scatter_sum(inputs, index, rows)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"
