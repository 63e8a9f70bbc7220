"""Held-out evaluation for training: predict a dataset (flip test + DARK), score it, and two baselines.

Predictions are collected per sample (keyed by dataset index) so that the shards of a distributed run
gather into exactly the set a single process would produce.

Metrics:

- COCO-format data: OKS AP / AR through pycocotools (``dspose_graph.eval.coco_eval.evaluate_coco``).
- MPII with its official val ``.mat`` and the full val split: PCKh@0.5 (``dspose_graph.eval.pckh``).
- PCK@0.2 (``dspose_graph.eval.pck``), a keypoint being correct when it lies within 0.2 x the longest side of
  the person box (the crop box without its ``BOX_PADDING``), over keypoints labelled in the ground truth; left
  out when the boxes are detections (they carry no ground truth).
- With the skeleton given: torso PCK@0.2 (``torso_PCK@0.2``, the LSP papers' metric: 0.2 x the distance between
  left shoulder and right hip) and per joint (``torso_PCK@0.2/<joint>``), for skeletons that have those two
  joints, over the ``torso_persons`` persons whose two torso joints are labelled; the left/right swap rate
  (``swap``, percent of labelled pairs whose crossed assignment is the closer) and mirror rate (``mirror``, percent
  of those persons' labelled pairs with both joints within 0.2 torso of the other side's label).

Crops go through :func:`~dspose_graph.eval.inference.predict_crops` (the path ``Predictor`` takes too) with the
codec the dataset encoded its targets with (``data.codec``): its flip shift, DARK's blur border and its crop
geometry back to the image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dspose_graph.data.codec import Codec, get_codec
from dspose_graph.eval.inference import predict_crops
from dspose_graph.eval.pck import (mirror_rate, pck, pck_normalizer, swap_rate, torso_joints, torso_pck,
                                   torso_sizes)
from dspose_graph.data.image import normalize_batch, opencv_single_thread
from dspose_graph.train.distributed import DistInfo, all_gather_objects, on_every_rank, on_main

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    flip_test: bool = True,
    decode: str = "dark",
    codec: str | Codec | None = None,
    workers: int = 0,
    info: DistInfo | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, np.ndarray]:
    """Keypoints of every sample of ``dataset`` in original-image pixels, with ground truth beside them.

    Returns arrays sorted by dataset index: ``index`` (N,), ``coords`` (N, K, 2), ``scores`` (N, K),
    ``image_id`` (N,), ``ann_id`` (N,), ``center`` (N, 2), ``scale`` (N, 2), ``box_score`` (N,),
    ``gt`` (N, K, 3). Under DDP each rank predicts a strided shard and all ranks get the merged result.
    ``codec`` defaults to the dataset's own (``dataset.codec``), else the default codec. ``forward`` runs the
    network (e.g. a ``models.runtime.PreparedModel`` of ``model`` for a fast path); default ``model`` itself.
    ``workers`` processes load the crops (one OpenCV thread each), into pinned memory on CUDA; heatmaps are
    decoded on ``device``.
    """
    info = info or DistInfo()
    indices = list(range(info.rank, len(dataset), info.world_size))  # type: ignore[arg-type]
    # A failure in one rank's shard (an unreadable image) stops every rank here, not at the gather below.
    local = on_every_rank(lambda: _predict_shard(model, dataset, indices, batch_size=batch_size, device=device,
                                                 flip_test=flip_test, decode=decode, codec=codec, workers=workers,
                                                 forward=forward),
                          info, "predicting the held-out set")
    return _merge(all_gather_objects(local, info))


def _predict_shard(model: torch.nn.Module, dataset: Dataset, indices: list[int], *, batch_size: int,
                   device: torch.device | str, flip_test: bool, decode: str, codec: str | Codec | None, workers: int,
                   forward: Callable[[torch.Tensor], torch.Tensor] | None) -> dict[str, np.ndarray]:
    """:func:`predict_dataset`'s arrays for the samples ``indices`` of ``dataset`` (this rank's shard)."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    codec = get_codec(codec if codec is not None else getattr(base, "codec", None))
    device = torch.device(device)
    if workers:
        opencv_single_thread()  # inherited by the workers (see Trainer._loader)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    schema = getattr(model, "schema", None) or dataset.schema  # type: ignore[attr-defined]
    flip_index = list(schema.flip_index)
    heatmap_size = tuple(model.heatmap_size)  # type: ignore[attr-defined]
    run = forward if forward is not None else model
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("coords", "scores", "center", "scale", "box_score",
                                                          "image_id", "ann_id", "gt")}
    try:
        for batch in loader:
            images = normalize_batch(batch["image"].to(device, non_blocking=True))
            meta = batch["meta"]
            center = meta["center"].numpy().astype(np.float64)
            scale = meta["scale"].numpy().astype(np.float64)
            coords, scores = predict_crops(run, images, center, scale, codec=codec, flip_index=flip_index,
                                           heatmap_size=heatmap_size, flip_test=flip_test, decode=decode)
            parts["coords"].append(coords)
            parts["scores"].append(scores)
            parts["center"].append(center)
            parts["scale"].append(scale)
            parts["box_score"].append(meta["score"].numpy().astype(np.float64))
            parts["image_id"].append(meta["image_id"].numpy().astype(np.int64))
            parts["ann_id"].append(meta["ann_id"].numpy().astype(np.int64))
            parts["gt"].append(meta["keypoints"].numpy().astype(np.float64))
    finally:
        model.train(was_training)
    local = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
    local["index"] = np.asarray(indices, dtype=np.int64)
    return local


def _merge(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    shards = [s for s in shards if len(s["index"])]
    merged = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
    order = np.argsort(merged["index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def metrics_once(compute: Callable[[], dict[str, float]], info: DistInfo) -> dict[str, float]:
    """``compute()`` run on rank 0 only (pycocotools, the PCKh toolkit) and its metrics broadcast to every rank.

    An error on rank 0 is broadcast too and raised on every rank, so none waits for metrics that never come.
    """
    return on_main(compute, info, "evaluation")


def mean_pose(dataset: Dataset, workers: int = 0, batch_size: int = 32) -> np.ndarray:
    """Mean normalised pose of a dataset: per keypoint, the mean of ``(x - center) / scale`` over labelled ones.

    Returns (K, 2); a keypoint never labelled gets the box centre (0, 0).
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    total = None
    count = None
    for batch in loader:
        meta = batch["meta"]
        kp = meta["keypoints"].numpy().astype(np.float64)
        rel = (kp[..., :2] - meta["center"].numpy()[:, None, :]) / meta["scale"].numpy()[:, None, :]
        labelled = (kp[..., 2] > 0).astype(np.float64)[..., None]
        s = (rel * labelled).sum(0)
        c = labelled.sum(0)
        total = s if total is None else total + s
        count = c if count is None else count + c
    if total is None:
        raise ValueError("mean_pose: the training dataset is empty")
    return total / np.maximum(count, 1.0)


def mean_pose_predictions(pose: np.ndarray, reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The mean-pose baseline: ``pose`` (K, 2) placed in each box of ``reference`` (a prediction dict)."""
    out = dict(reference)
    out["coords"] = reference["center"][:, None, :] + pose[None] * reference["scale"][:, None, :]
    out["scores"] = np.ones(out["coords"].shape[:2])
    return out


def coco_results(pred: dict[str, np.ndarray], sigmas: np.ndarray | None = None, nms_threshold: float | None = 0.9,
                 rescore_threshold: float = 0.2) -> list[dict[str, Any]]:
    """pycocotools keypoint results of a prediction dict, rescored and OKS-NMSed over the crop areas.

    Official TokenPose applies OKS-NMS (``OKS_THRE`` 0.9) with detector and ground-truth boxes alike and
    rescores with the keypoints above ``IN_VIS_THRE`` (0.2).
    """
    from dspose_graph.eval.coco_eval import make_coco_results

    keypoints = np.concatenate([pred["coords"], pred["scores"][..., None]], axis=-1)
    return make_coco_results(keypoints, pred["image_id"], pred["box_score"], areas=pred["scale"].prod(axis=1),
                             sigmas=sigmas, nms_threshold=nms_threshold, rescore_threshold=rescore_threshold)


def oks_sigmas(schema: Any) -> np.ndarray | None:
    """The OKS sigmas to pass to :func:`compute_metrics`: ``None`` (pycocotools' own) for COCO-17."""
    return None if schema.num_keypoints == 17 else schema.sigmas


def compute_metrics(
    pred: dict[str, np.ndarray],
    *,
    coco_gt: Any = None,
    sigmas: np.ndarray | None = None,
    pckh_mat: str | Path | None = None,
    nms_threshold: float | None = 0.9,
    rescore_threshold: float = 0.2,
    schema: Any = None,
) -> dict[str, float]:
    """OKS AP (when ``coco_gt`` is given), PCKh (when ``pckh_mat`` is given) and PCK@0.2 (when the boxes carry
    ground-truth keypoints) of a prediction dict; ``nms_threshold`` and ``rescore_threshold`` as :func:`coco_results`.
    With ``schema`` (the model's skeleton) and ground truth: torso PCK@0.2 (mean and per joint) where the skeleton
    has a left shoulder and a right hip, and the left/right ``swap`` rate where it has left/right pairs."""
    metrics: dict[str, float] = {}
    if (pred["gt"][..., 2] > 0).any():
        metrics["PCK@0.2"] = pck(pred["coords"], pred["gt"], pck_normalizer(pred["scale"]), 0.2)
        metrics.update(_skeleton_metrics(pred, schema) if schema is not None else {})
    if coco_gt is not None:
        from dspose_graph.eval.coco_eval import evaluate_coco

        results = coco_results(pred, sigmas, nms_threshold=nms_threshold, rescore_threshold=rescore_threshold)
        stats = evaluate_coco(results, coco_gt, sigmas=sigmas)
        metrics.update({k: float(v) for k, v in stats.items() if isinstance(v, (int, float, np.floating))})
    if pckh_mat is not None:
        from dspose_graph.eval.pckh import evaluate_pckh

        from dspose_graph.data.mpii import MPII_INDEX_BASE

        # MPIIDataset works in 0-based pixels; the toolkit's ground truth is MATLAB's 1-based frame.
        stats = evaluate_pckh(pred["coords"] + MPII_INDEX_BASE, pckh_mat)
        metrics.update({f"PCKh_{k}" if not str(k).startswith("PCKh") else str(k): float(v)
                        for k, v in stats.items() if isinstance(v, (int, float, np.floating))})
    return metrics


def _skeleton_metrics(pred: dict[str, np.ndarray], schema: Any) -> dict[str, float]:
    """Torso PCK@0.2 (mean, per joint), the swap rate and the mirror rate, where the skeleton and labels allow them."""
    metrics: dict[str, float] = {}
    torso = torso_joints(schema)
    gt = pred["gt"]
    if torso is not None and ((gt[:, torso[0], 2] > 0) & (gt[:, torso[1], 2] > 0)).any():
        result = torso_pck(pred["coords"], gt, torso, 0.2)
        metrics["torso_PCK@0.2"] = result["mean"]
        metrics["torso_persons"] = float(result["persons"])  # persons with a torso size (the others are left out)
        metrics.update({f"torso_PCK@0.2/{name}": float(v) for name, v in zip(schema.keypoints, result["per_joint"])
                        if np.isfinite(v)})
    both = [(gt[:, a, 2] > 0) & (gt[:, b, 2] > 0) for a, b in schema.flip_pairs]
    if any(pair.any() for pair in both):
        metrics["swap"] = swap_rate(pred["coords"], gt, schema)
    if "torso_persons" in metrics and any((pair & torso_sizes(gt, torso)[1]).any() for pair in both):
        metrics["mirror"] = mirror_rate(pred["coords"], gt, schema, torso)
    return metrics
