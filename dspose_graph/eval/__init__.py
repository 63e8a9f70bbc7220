"""Evaluation (knows no model): heatmap decoding, COCO OKS AP, MPII PCKh.

- :mod:`dspose_graph.eval.decode`: ``decode_heatmaps`` (DARK / argmax), ``flip_back``, ``heatmaps_to_image``.
- :mod:`dspose_graph.eval.coco_eval`: ``make_coco_results`` (rescoring, OKS-NMS), ``evaluate_coco``.
- :mod:`dspose_graph.eval.pckh`: ``evaluate_pckh``, ``format_pckh_table``, ``load_predictions``.
"""
