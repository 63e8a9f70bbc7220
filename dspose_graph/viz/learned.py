"""The learned topology of a trained model: run it on samples, draw A_p / A_f / A_m and p, save the numbers.

:func:`image_samples` (one image or box) and :func:`data_samples` (N evenly spaced samples of a training
config's split, built by :func:`dspose_graph.train.pipeline.build_dataset`) give :class:`Samples`;
:func:`write_adjacency_figures` writes ``adjacency.*`` (heatmaps), ``learned_graph.*`` (graphs over the
mean skeleton) and ``adjacency.json`` (the plotted numbers). ``dspose plot adjacency`` is their CLI.

Shapes:
    N: samples, K: keypoints, L: graph layers, (H, W): model input, (h, w): heatmap.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dspose_graph.data.codec import Codec
from dspose_graph.data.image import normalize_batch
from dspose_graph.io import atomic_write_json
from dspose_graph.models import DSPose
from topology.schemas import KeypointSchema

FORMATS = ("png", "pdf", "svg")


@dataclasses.dataclass
class Samples:
    """A model and the crops it is run on: ``crops`` ``(N, 3, H, W)`` cut at ``centers``/``scales`` ``(N, 2)`` with
    ``codec`` (the checkpoint's); ``gt`` ground-truth keypoints in image pixels ``(N, K, 3)`` when known; ``what``
    describes the samples in titles."""

    model: DSPose
    crops: torch.Tensor
    centers: np.ndarray
    scales: np.ndarray
    codec: Codec
    gt: np.ndarray | None
    what: str

    @property
    def schema(self) -> KeypointSchema:
        return self.model.schema


def output_paths(out: Path, stem: str, formats: str) -> list[Path]:
    """``out/stem.<fmt>`` for a comma-separated list of figure formats; ``ValueError`` for others."""
    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    if not fmts or any(f not in FORMATS for f in fmts):
        raise ValueError(f"--formats {formats!r}: expected a comma-separated list of {', '.join(FORMATS)}")
    return [out / f"{stem}.{f}" for f in fmts]


class AdjacencyRecorder:
    """``model`` as a ``forward(images) -> heatmaps`` that also keeps the adjacency dict of every batch it runs.

    ``ValueError`` for a model without a graph head (it returns no adjacency).
    """

    def __init__(self, model: DSPose) -> None:
        self.model = model
        self.parts: list[dict[str, Any]] = []

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        heat, adj = self.model(images, return_adjacency=True)
        if adj is None:
            raise ValueError(f"model {self.model.config.name!r} (head={self.model.config.head!r}) has no graph head, "
                             "so it has no adjacency to plot")
        self.parts.append(adj)
        return heat

    def merged(self) -> dict[str, Any]:
        """The adjacency over every batch run: A_p, and A_f/A_m per layer concatenated over batches, and p."""
        parts = self.parts
        return {
            "A_p": parts[0]["A_p"],
            "A_f": [torch.cat([p["A_f"][l] for p in parts]) for l in range(len(parts[0]["A_f"]))],
            "A_m": [torch.cat([p["A_m"][l] for p in parts]) for l in range(len(parts[0]["A_m"]))],
            "p": None if parts[0].get("p") is None else parts[0]["p"].detach(),
        }


def collect_adjacency(model: DSPose, images: torch.Tensor, batch_size: int = 16) -> tuple[dict[str, Any], torch.Tensor]:
    """The model's adjacency dict over all ``images`` (A_f/A_m concatenated over batches) and its heatmaps."""
    recorder = AdjacencyRecorder(model)
    heat = torch.cat([recorder(images[start:start + batch_size]) for start in range(0, images.shape[0], batch_size)])
    return recorder.merged(), heat


def sample_keypoints(samples: Samples, batch_size: int = 16) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The adjacency dict over all samples, and their keypoints ``(N, K, 2)`` in image pixels with scores ``(N, K)``.

    One forward pass per batch, through :func:`~dspose_graph.eval.inference.predict_crops` with the samples'
    codec (no flip test: the adjacency is that of the crop shown).
    """
    from dspose_graph.eval.inference import predict_crops

    recorder = AdjacencyRecorder(samples.model)
    points, scores = [], []
    for i in range(0, samples.crops.shape[0], batch_size):
        p, s = predict_crops(recorder, samples.crops[i:i + batch_size], samples.centers[i:i + batch_size],
                             samples.scales[i:i + batch_size], codec=samples.codec,
                             flip_index=samples.schema.flip_index, heatmap_size=samples.model.heatmap_size,
                             flip_test=False)
        points.append(p)
        scores.append(s)
    return recorder.merged(), np.concatenate(points), np.concatenate(scores)


def image_samples(weights: str | Path, image: str | Path, box: Sequence[float] | None = None,
                  device: str = "cpu") -> Samples:
    """One person crop of ``image`` (the whole image, or ``box`` ``[x, y, w, h]``), cropped as ``Predictor`` does."""
    from dspose_graph.data import load_image
    from dspose_graph.predict import Predictor

    predictor = Predictor(weights, device=device, flip_test=False)
    rgb = load_image(image)
    boxes = np.array([box]) if box else np.array([[0.0, 0.0, rgb.shape[1], rgb.shape[0]]])
    crops, centers, scales = predictor.crop(rgb, boxes)
    return Samples(predictor.model, crops, centers, scales, predictor.codec, None, Path(image).name)


def data_samples(weights: str | Path, config_path: str | Path, split: str = "val", num: int = 16,
                 device: str = "cpu") -> Samples:
    """``num`` evenly spaced, unaugmented samples of the ``split`` of training config ``config_path``, cropped with
    the checkpoint's codec (whatever the config's ``data.codec`` says)."""
    from dspose_graph.data.codec import get_codec
    from dspose_graph.models.checkpoint import inference_spec, load_model
    from dspose_graph.train.config import load_config
    from dspose_graph.train.pipeline import build_dataset

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    model, state = load_model(weights, device)
    codec = get_codec(inference_spec(state, model).codec)
    config = load_config(config_path)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, codec=codec.name))
    dataset = build_dataset(config, model, split)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"--data {config_path}: the {split} split has no samples")
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(num, len(dataset))).round().astype(int))  # type: ignore[arg-type]
    samples = [dataset[int(i)] for i in indices]
    crops = normalize_batch(torch.stack([s["image"] for s in samples]).to(device))
    meta = {k: np.stack([np.asarray(s["meta"][k], dtype=np.float64) for s in samples]) for k in ("center", "scale", "keypoints")}
    return Samples(model, crops, meta["center"], meta["scale"], codec, meta["keypoints"],
                   f"{Path(config_path).name}, {split}")


def write_adjacency_figures(samples: Samples, out: Path, formats: str = "png,pdf", sample: int = 0,
                            weights: str = "") -> list[Path]:
    """Adjacency heatmaps, learned graphs and ``adjacency.json`` under ``out``; returns the files written."""
    from dspose_graph.viz.adjacency import mean_skeleton, plot_adjacency_heatmaps, plot_learned_graph

    heat_paths, graph_paths = output_paths(out, "adjacency", formats), output_paths(out, "learned_graph", formats)
    n, schema, what = samples.crops.shape[0], samples.schema, samples.what
    if not 0 <= sample < n:
        raise ValueError(f"--sample {sample} is out of range for {n} sample(s)")
    adj, points, scores = sample_keypoints(samples)
    pred = np.concatenate([points, (scores > 0)[..., None]], axis=2)
    gt = samples.gt
    if gt is not None and (gt[..., 2] > 0).sum(axis=1).max() >= 2:
        positions, source = mean_skeleton(gt), "ground-truth"
    else:
        positions, source = mean_skeleton(pred), "predicted"
    plot_adjacency_heatmaps(adj, schema, heat_paths, sample=sample, title=f"Dual-space adjacency: {what}")
    layers = len(adj["A_m"])
    graphs = {"$A_p$ (physical)": adj["A_p"], f"$A_f$ mean, layer {layers}": adj["A_f"][-1].mean(0)}
    graphs.update({f"$A_m$ mean, layer {l + 1}": a.mean(0) for l, a in enumerate(adj["A_m"])})
    plot_learned_graph(graphs, schema, positions, graph_paths,
                       title=f"Learned topology over the {source} mean skeleton ({what}, N = {n})")
    p = adj["p"]
    atomic_write_json(out / "adjacency.json", {
        "weights": weights, "samples": what, "num_samples": n, "keypoints": list(schema.keypoints),
        "p": None if p is None else np.asarray(p.detach().cpu(), dtype=float).reshape(-1).tolist(),
        "A_p": np.asarray(adj["A_p"].detach().cpu(), dtype=float).round(5).tolist(),
        "A_f_mean": [a.mean(0).cpu().numpy().round(5).tolist() for a in adj["A_f"]],
        "A_m_mean": [a.mean(0).cpu().numpy().round(5).tolist() for a in adj["A_m"]],
        "mean_skeleton": positions.round(4).tolist(), "mean_skeleton_source": source,
    })
    return heat_paths + graph_paths + [out / "adjacency.json"]


def check_box(box: Sequence[float] | None) -> None:
    """Refuse a ``--box`` that is not a box inside an image: NaN/inf, negative, empty."""
    from dspose_graph.predict import BOX_FIELDS, box_problem

    if box is None:
        return
    problem = box_problem(box)
    text = " ".join(f"{v:g}" for v in box)
    if problem:
        raise ValueError(f"--box {text}: {problem}")
    for name, value in zip(BOX_FIELDS, box):
        if value < 0:
            raise ValueError(f"--box {text}: field {name!r} = {value:g} is negative; X Y is the top-left corner "
                             "inside the image")


def adjacency_figures(weights: str | Path, out: Path, *, image: str | Path | None = None,
                      box: Sequence[float] | None = None, data: str | Path | None = None, split: str = "val",
                      num: int = 16, sample: int = 0, device: str = "cpu", formats: str = "png,pdf") -> list[Path]:
    """``dspose plot adjacency``: the figures of checkpoint ``weights`` (a path or a shipped weight name) on one
    ``image`` (or its ``box``) or on ``num`` samples of training config ``data``; returns the files written."""
    if box is not None and not image:
        raise ValueError("--box applies to --image (with --data the samples come with their own boxes)")
    check_box(box)
    output_paths(out, "adjacency", formats)  # a bad --formats fails before the model runs
    samples = image_samples(weights, image, box, device) if image else data_samples(weights, data, split, num, device)
    return write_adjacency_figures(samples, out, formats, sample, weights=str(weights))
