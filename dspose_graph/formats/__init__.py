"""Readers and writers of the dataset file formats: MPII annotations (:mod:`.mpii`) and COCO-format files
(:mod:`.coco`: ground truth, detections in, keypoint results out). One home per format, so that the datasets,
the topology builder, evaluation and prediction read the same fields with the same checks and messages.
Knows no model and no torch."""
