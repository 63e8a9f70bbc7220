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
from dspose_graph.eval.inference import predict_crops


def mirrored_input_targets(dataset: TopDownDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``(K, h, w)``, ``(K,)`` a perfect network gives for record ``index``'s input crop mirrored as an array."""
    record = dataset.records[index]
    iw = dataset.input_size[0]
    m = dataset.codec.crop_matrix(record.center, record.scale, 0.0, dataset.input_size)
    kp = transform_keypoints(record.keypoints, m, dataset.schema.flip_index)
    kp[:, 0] = (iw - 1.0) - kp[:, 0]
    joints = dataset.codec.joints_to_heatmap(kp[:, :2], dataset.input_size, dataset.heatmap_size)
    return dataset.codec.encode(joints, kp[:, 2] > 0, dataset.heatmap_size, dataset.sigma, target=dataset.target)


class PerfectNetwork:
    """A network that answers every crop it is shown with exactly that crop's training targets.

    It is shown crop tokens instead of pixels (:meth:`tokens`): ``(N, 1, 1, 2)`` holding ``[index, -1]`` per record,
    which the flip test's ``torch.flip`` of the width axis turns into ``[-1, index]``, so the network knows
    whether it sees a crop or its mirror image, as a real network sees it in the pixels. ``weights`` collects the
    target weights ``(K,)`` of the records it has answered.
    """

    def __init__(self, dataset: TopDownDataset) -> None:
        self.dataset = dataset
        self.weights: dict[int, np.ndarray] = {}

    @staticmethod
    def tokens(indices: range | list[int]) -> torch.Tensor:
        """The crops of records ``indices``, as the network is shown them."""
        idx = torch.as_tensor(list(indices), dtype=torch.float64)
        return torch.stack([idx, torch.full_like(idx, -1.0)], dim=1).view(-1, 1, 1, 2)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        maps = []
        for first, second in tokens[:, 0, 0, :].tolist():
            if first >= 0:
                record = self.dataset.records[int(first)]
                heat, self.weights[int(first)] = self.dataset.targets(record, CropParams(record.center, record.scale))
            else:
                heat = mirrored_input_targets(self.dataset, int(second))[0]
            maps.append(heat)
        return torch.from_numpy(np.stack(maps))


def perfect_network(dataset: TopDownDataset, flip_test: bool = True, method: str = "dark",
                    batch_size: int = 128) -> dict[str, np.ndarray]:
    """Decode every evaluation crop's own targets (averaged with the mirrored crop's) back into the image.

    Runs :class:`PerfectNetwork` through :func:`~dspose_graph.eval.inference.predict_crops`, the path a model's
    heatmaps take, with the dataset's codec. Needs no image: only the records' boxes and keypoints. Returns
    ``coords`` (N, K, 2) image pixels, ``scores`` (N, K), ``weight`` (N, K) the target weights, ``gt`` (N, K, 3),
    ``center``/``scale`` (N, 2), ``image_id``, ``ann_id``, ``box_score`` (N,), as
    ``train.evaluate.predict_dataset`` lays them out.
    """
    network = PerfectNetwork(dataset)
    recs = dataset.records
    parts: dict[str, list[Any]] = {k: [] for k in ("coords", "scores")}
    for start in range(0, len(recs), batch_size):
        idx = range(start, min(len(recs), start + batch_size))
        coords, scores = predict_crops(network, network.tokens(idx), np.stack([recs[i].center for i in idx]),
                                       np.stack([recs[i].scale for i in idx]), codec=dataset.codec,
                                       flip_index=dataset.schema.flip_index, heatmap_size=dataset.heatmap_size,
                                       flip_test=flip_test, decode=method)
        parts["coords"].append(coords)
        parts["scores"].append(scores)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out.update(
        weight=np.stack([network.weights[i] for i in range(len(recs))]),
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
