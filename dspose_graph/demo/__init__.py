"""The demo as a library: ``run_demo(DemoOptions(out=..., data=...))`` is what ``dspose demo`` runs.

Pieces: :mod:`~dspose_graph.demo.data` (which data, and what its images allow),
:mod:`~dspose_graph.demo.baselines` (held-out rows, swap rate, verdict), :mod:`~dspose_graph.demo.report`
(figures and ``report.md``), :mod:`~dspose_graph.demo.run` (the steps in order). It sits above ``train`` and
``viz`` and below ``cli``.
"""

from dspose_graph.demo.run import DemoOptions, DemoResult, run_demo

__all__ = ["DemoOptions", "DemoResult", "run_demo"]
