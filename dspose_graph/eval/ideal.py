"""The perfect-network check: what a codec loses by itself, with no model in the loop.

A perfect network outputs, for every crop it is shown, exactly the training targets of that crop. Running such
a network through the evaluation path (flip test, decoding, back-projection) shows the error the codec's
encoding and decoding add on their own: a consistent codec returns the annotated joints to a small fraction of
a pixel, an inconsistent pair (e.g. targets drawn in one convention, decoded in another) shows its bias here.

The flip test feeds the network the crop mirrored as an array (``torch.flip`` of the input, about the input's
pixel-grid centre ``(W - 1) / 2``). The perfect network's answer to it is the targets of the joints mirrored
that way and carried to the heatmap by the codec's input-to-heatmap map; for the plain (HRNet) crop that is
not the dataset's own flipped crop (mirrored about ``W / 2``), which is why HRNet needs its flip shift.

Shapes: ``N`` persons, ``K`` keypoints, ``(h, w)`` heatmap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dspose_graph.data.augment import CropParams, transform_keypoints
from dspose_graph.data.base import TopDownDataset
from dspose_graph.data.image import crop_matrix
from dspose_graph.data.targets import gaussian_heatmaps, joints_to_heatmap
from dspose_graph.eval.decode import decode_heatmaps, flip_back, heatmaps_to_image


def mirrored_input_targets(dataset: TopDownDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``(K, h, w)``, ``(K,)`` a perfect network gives for record ``index``'s input crop mirrored as an array."""
    record = dataset.records[index]
    iw = dataset.input_size[0]
    m = crop_matrix(record.center, record.scale, 0.0, dataset.input_size, codec=dataset.codec)
    kp = transform_keypoints(record.keypoints, m, dataset.schema.flip_index)
    kp[:, 0] = (iw - 1.0) - kp[:, 0]
    joints = joints_to_heatmap(kp[:, :2], dataset.input_size, dataset.heatmap_size, codec=dataset.codec)
    return gaussian_heatmaps(joints, kp[:, 2] > 0, dataset.heatmap_size, dataset.sigma, target=dataset.target)


def perfect_network(dataset: TopDownDataset, flip_test: bool = True, method: str = "dark",
                    batch_size: int = 128) -> dict[str, np.ndarray]:
    """Decode every evaluation crop's own targets (averaged with the mirrored crop's) back into the image.

    Needs no image: only the records' boxes and keypoints. Returns ``coords`` (N, K, 2) image pixels,
    ``scores`` (N, K), ``weight`` (N, K) the target weights, ``gt`` (N, K, 3), ``center``/``scale`` (N, 2),
    ``image_id``, ``ann_id``, ``box_score`` (N,), as ``train.evaluate.predict_dataset`` lays them out.
    """
    parts: dict[str, list[Any]] = {k: [] for k in ("coords", "scores", "weight")}
    n = len(dataset.records)
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        own = [dataset.targets(dataset.records[i], CropParams(dataset.records[i].center, dataset.records[i].scale))
               for i in idx]
        heat = torch.from_numpy(np.stack([h for h, _ in own]))
        if flip_test:
            mirrored = torch.from_numpy(np.stack([mirrored_input_targets(dataset, i)[0] for i in idx]))
            heat = 0.5 * (heat + flip_back(mirrored, dataset.schema.flip_index, codec=dataset.codec))
        coords, scores = decode_heatmaps(heat, method=method, codec=dataset.codec)
        centers = np.stack([dataset.records[i].center for i in idx])
        scales = np.stack([dataset.records[i].scale for i in idx])
        parts["coords"].append(np.asarray(heatmaps_to_image(coords.numpy(), centers, scales, dataset.heatmap_size,
                                                            codec=dataset.codec)))
        parts["scores"].append(scores.numpy())
        parts["weight"].append(np.stack([w for _, w in own]))
    recs = dataset.records
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out.update(
        gt=np.stack([r.keypoints for r in recs]).astype(np.float64),
        center=np.stack([r.center for r in recs]), scale=np.stack([r.scale for r in recs]),
        image_id=np.array([r.image_id for r in recs], dtype=np.int64),
        ann_id=np.array([r.ann_id for r in recs], dtype=np.int64),
        box_score=np.array([r.score for r in recs], dtype=np.float64),
    )
    return out


def error_stats(pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean error, x and y bias (px) over the keypoints with a target (weight > 0); ``count`` of them."""
    used = pred["weight"] > 0
    if not used.any():
        raise ValueError("error_stats: no keypoint has a target (weight > 0)")
    d = pred["coords"] - pred["gt"][..., :2]
    return {"mean_error": float(np.linalg.norm(d, axis=-1)[used].mean()), "x_bias": float(d[..., 0][used].mean()),
            "y_bias": float(d[..., 1][used].mean()), "count": float(used.sum())}


def mean_oks(pred: dict[str, np.ndarray], areas: np.ndarray, sigmas: np.ndarray) -> float:
    """Mean over persons of the OKS between prediction and own ground truth (COCO's formula, labelled joints).

    ``areas`` (N,) are the ground-truth segment areas; persons without a labelled joint are left out.
    """
    labelled = pred["gt"][..., 2] > 0
    d2 = ((pred["coords"] - pred["gt"][..., :2]) ** 2).sum(-1)
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    e = d2 / var[None] / (np.asarray(areas, dtype=np.float64)[:, None] + np.spacing(1)) / 2.0
    per = (np.exp(-e) * labelled).sum(1) / np.maximum(labelled.sum(1), 1)
    has = labelled.any(1)
    return float(per[has].mean())
