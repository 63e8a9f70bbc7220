"""Evaluation (knows no model): heatmap decoding, flip test, COCO OKS AP, MPII PCKh, PCK.

- :mod:`dspose_graph.eval.decode`: the decoding primitives ``decode_heatmaps`` (DARK / argmax), ``flip_back``,
  ``apply_matrices``; a codec (``dspose_graph.data.codec``) calls them with its own border, shift and crop.
- :mod:`dspose_graph.eval.inference`: ``predict_crops``, crops -> image keypoints (every inference path).
- :mod:`dspose_graph.eval.coco_eval`: ``make_coco_results`` (rescoring, OKS-NMS), ``evaluate_coco``.
- :mod:`dspose_graph.eval.pckh`: ``evaluate_pckh``, ``format_pckh_table``, ``load_predictions``.
- :mod:`dspose_graph.eval.flip`: ``flip_test_heatmaps`` (the flip test).
- :mod:`dspose_graph.eval.pck`: ``pck``, ``pck_normalizer`` (PCK@0.2 for any skeleton).
"""
