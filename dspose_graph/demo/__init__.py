"""The demo as a library: ``run_demo(DemoOptions(out=..., data=...))`` is what ``dspose demo`` runs, the project's
main job end to end on a laptop CPU in minutes:

1. Data: the COCO-format dataset given with ``--data``/``$DATA``, else LSP Extended from the shared data
   folder (real images, read in place), else people the project generates.
2. Physical topology: the MPII clusters, the COCO groups and the trained skeleton's groups, with figures.
3. A small model (``dspose_t`` by default) trained for a few minutes: on real data fine-tuned from the
   shipped weights pretrained on generated people; on generated people from their backbone and Transformer
   with a fresh GraphConv graph head (docs/decisions/synthetic.md, decision 15).
4. Held-out evaluation (OKS AP, PCK@0.2, left/right swap rate) against the untrained network, the starting
   weights and the mean pose; ``report.md`` with the table, figures and the checkpoint.

Pieces: :mod:`~dspose_graph.demo.data` (which data, and what its images allow),
:mod:`~dspose_graph.demo.baselines` (held-out rows, swap rate, verdict), :mod:`~dspose_graph.demo.report`
(figures and ``report.md``), :mod:`~dspose_graph.demo.run` (the steps in order). It sits above ``train`` and
``viz`` and below ``cli``.
"""

from dspose_graph.demo.run import DemoOptions, DemoResult, run_demo

__all__ = ["DemoOptions", "DemoResult", "run_demo"]
