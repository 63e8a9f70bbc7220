r"""Sum of edge messages onto their target nodes: torch-scatter's fused kernel where the ``scatter`` extra is
installed, PyG's own scatter (``torch.Tensor.scatter_add_``) otherwise; both compute

.. math::
    \mathbf{out}_i = \sum_{e \,:\, \mathrm{index}_e = i} \mathbf{src}_e .

Shapes (this module):
    E: messages (edges), F: channels, N: output rows (``dim_size``).
"""

from __future__ import annotations

import logging
from typing import Callable

from torch import Tensor
from torch_geometric.utils import scatter as pyg_scatter

log = logging.getLogger(__name__)

ScatterSum = Callable[[Tensor, Tensor, int], Tensor]


def _sum_pyg(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    return pyg_scatter(src, index, dim=0, dim_size=dim_size, reduce="sum")


def _implementations() -> dict[str, ScatterSum]:
    found: dict[str, ScatterSum] = {"pyg": _sum_pyg}
    try:
        import torch_scatter
    except ImportError:
        return found
    except OSError as err:  # a torch-scatter built against another torch fails to load its library
        log.warning("torch-scatter is installed but does not load (%s); using PyG's scatter", err)
        return found

    def _sum_torch_scatter(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
        return torch_scatter.scatter(src, index, dim=0, dim_size=dim_size, reduce="sum")

    return {"torch_scatter": _sum_torch_scatter, **found}


#: Name -> sum-scatter function of every implementation this environment can run, preferred first.
SCATTER_SUM: dict[str, ScatterSum] = _implementations()
#: The implementation :func:`scatter_sum` uses: ``"torch_scatter"`` when it loads, else ``"pyg"``.
SCATTER_BACKEND: str = next(iter(SCATTER_SUM))


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Row ``i`` of the result is the sum of the rows of ``src`` whose ``index`` is ``i``.

    Args:
        src: messages ``(E, F)``.
        index: target row of each message ``(E,)``, int64.
        dim_size: N, rows of the result (nodes without a message get zeros).

    Returns:
        ``(N, F)``, differentiable with respect to ``src``.
    """
    return SCATTER_SUM[SCATTER_BACKEND](src, index, dim_size)
