"""``dspose plot``: figures of a trained model's adjacencies and of the physical topology.

``dspose plot adjacency --weights CKPT (--image FILE [--box X Y W H] | --data CONFIG [--num N])``
    runs the model on one image (the whole image, or the box, is the person) or on N evenly spaced
    validation samples of the dataset a training config names, and writes ``adjacency.{png,pdf}``
    (A_p, A_f per sample and mean, A_m per graph layer, learned p), ``learned_graph.{png,pdf}`` (the
    same matrices as graphs over the mean skeleton) and ``adjacency.json`` (the plotted numbers).
``dspose plot topology [--topology mpii|coco|FILE]`` writes the mutual-information matrix and the
    clusters drawn on the skeleton (``mi_matrix``, ``topology_skeleton``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspose_graph.io import atomic_write_json

HELP = "figures: learned adjacency heatmaps and graphs (adjacency), physical clusters (topology)"
log = logging.getLogger("dspose.plot")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="FIGURE", required=True)
    a = sub.add_parser("adjacency", help="A_p, A_f, A_m and p of a trained model, as heatmaps and graphs")
    a.add_argument("--weights", required=True, help="checkpoint (.pt)")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one image; the whole image (or --box) is the person")
    src.add_argument("--data", help="a training config YAML; its validation split supplies the samples")
    a.add_argument("--box", type=float, nargs=4, metavar=("X", "Y", "W", "H"), help="person box in --image")
    a.add_argument("--num", type=int, default=16, help="--data: number of samples (default 16)")
    a.add_argument("--split", default="val", help="--data: which split (default val)")
    a.add_argument("--sample", type=int, default=0, help="which sample the per-sample A_f panel shows")
    a.add_argument("--device", default="cpu")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--formats", default="png,pdf", help="comma-separated figure formats (png, pdf, svg)")
    t = sub.add_parser("topology", help="mutual-information matrix and clusters of a physical topology")
    t.add_argument("--topology", default="mpii", help="'mpii', 'coco' (shipped) or a topology JSON file")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--formats", default="png,pdf", help="comma-separated figure formats (png, pdf, svg)")


def _outputs(out: Path, stem: str, formats: str) -> list[Path]:
    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("png", "pdf", "svg")]
    if not fmts or bad:
        raise ValueError(f"--formats {formats!r}: expected a comma-separated list of png, pdf, svg")
    return [out / f"{stem}.{f}" for f in fmts]


def dataset_from_config(config_path: str | Path, model: Any, split: str = "val"):
    """The evaluation (no augmentation) dataset of a training config, cropped for ``model``."""
    from dspose_graph.train.config import load_config
    from dspose_graph.data import build_dataset

    cfg = load_config(config_path).data
    root = Path(cfg.root) if cfg.root else Path(".")
    ann, images = (cfg.val_ann, cfg.val_images) if split == "val" else (cfg.train_ann, cfg.train_images)
    kwargs: dict[str, Any] = dict(input_size=model.input_size, heatmap_size=model.heatmap_size, train=False,
                                  sigma=cfg.sigma, udp=cfg.udp, schema=model.schema)
    if ann and images:
        kwargs.update(ann_file=root / ann, image_dir=root / images)
    return build_dataset(cfg.kind, root, split, **kwargs)


@torch.no_grad()
def collect_adjacency(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 16) -> tuple[dict[str, Any], torch.Tensor]:
    """The model's adjacency dict over all ``images`` (A_f/A_m concatenated over batches) and its heatmaps."""
    heat, parts = [], []
    for start in range(0, images.shape[0], batch_size):
        h, adj = model(images[start:start + batch_size], return_adjacency=True)
        heat.append(h)
        parts.append(adj)
    for key in ("A_p", "A_f", "A_m"):
        if key not in parts[0]:
            raise ValueError(f"the model returned no {key!r}: plot adjacency needs a dual-space (head='dual') model")
    merged = {
        "A_p": parts[0]["A_p"],
        "A_f": [torch.cat([p["A_f"][l] for p in parts]) for l in range(len(parts[0]["A_f"]))],
        "A_m": [torch.cat([p["A_m"][l] for p in parts]) for l in range(len(parts[0]["A_m"]))],
        "p": None if parts[0].get("p") is None else parts[0]["p"].detach(),
    }
    return merged, torch.cat(heat)


def _image_samples(args: argparse.Namespace):
    from dspose_graph.predict import Predictor

    predictor = Predictor(args.weights, device=args.device, flip_test=False)
    from dspose_graph.data import load_image

    image = load_image(args.image)
    boxes = np.array([args.box]) if args.box else np.array([[0.0, 0.0, image.shape[1], image.shape[0]]])
    crops, _, _ = predictor.crop(image, boxes)
    return predictor.model, predictor.schema, crops, None, f"{Path(args.image).name}"


def _data_samples(args: argparse.Namespace):
    from dspose_graph.data.transforms import apply_affine, crop_affine
    from dspose_graph.predict import load_model

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    model, schema, _ = load_model(args.weights, args.device)
    dataset = dataset_from_config(args.data, model, args.split)
    if len(dataset) == 0:
        raise ValueError(f"--data {args.data}: the {args.split} split has no samples")
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(args.num, len(dataset))).round().astype(int))
    samples = [dataset[int(i)] for i in indices]
    crops = torch.stack([s["image"] for s in samples]).to(args.device)
    # Ground-truth keypoints in the heatmap frame give the mean skeleton the graph is drawn on.
    gt = []
    for s in samples:
        m = s["meta"]
        kp = np.asarray(m["keypoints"], dtype=np.float64)
        mat = crop_affine(np.asarray(m["center"]), np.asarray(m["scale"]), float(m["rotation"]), model.heatmap_size)
        gt.append(np.concatenate([apply_affine(kp[:, :2], mat), kp[:, 2:3]], axis=1))
    return model, schema, crops, np.stack(gt), f"{Path(args.data).name}, {args.split}"


def plot_adjacency(args: argparse.Namespace) -> int:
    from dspose_graph.eval.decode import decode_heatmaps
    from dspose_graph.viz.adjacency import mean_skeleton, plot_adjacency_heatmaps, plot_learned_graph

    out = Path(args.out)
    heat_paths, graph_paths = _outputs(out, "adjacency", args.formats), _outputs(out, "learned_graph", args.formats)
    model, schema, crops, gt, what = _image_samples(args) if args.image else _data_samples(args)
    adj, heat = collect_adjacency(model, crops)
    n = crops.shape[0]
    if not 0 <= args.sample < n:
        raise ValueError(f"--sample {args.sample} is out of range for {n} sample(s)")
    pred, scores = decode_heatmaps(heat.float().cpu(), method="dark")
    pred = np.concatenate([pred.numpy(), (scores.numpy() > 0)[..., None]], axis=2)
    if gt is not None and (gt[..., 2] > 0).sum(axis=1).max() >= 2:
        positions, source = mean_skeleton(gt), "ground-truth"
    else:
        positions, source = mean_skeleton(pred), "predicted"
    plot_adjacency_heatmaps(adj, schema, heat_paths, sample=args.sample, title=f"Dual-space adjacency: {what}")
    layers = len(adj["A_m"])
    graphs = {"$A_p$ (physical)": adj["A_p"], f"$A_f$ mean, layer {layers}": adj["A_f"][-1].mean(0)}
    graphs.update({f"$A_m$ mean, layer {l + 1}": a.mean(0) for l, a in enumerate(adj["A_m"])})
    plot_learned_graph(graphs, schema, positions, graph_paths,
                       title=f"Learned topology over the {source} mean skeleton ({what}, N = {n})")
    p = adj["p"]
    atomic_write_json(out / "adjacency.json", {
        "weights": str(args.weights), "samples": what, "num_samples": n, "keypoints": list(schema.keypoints),
        "p": None if p is None else np.asarray(p.detach().cpu(), dtype=float).reshape(-1).tolist(),
        "A_p": np.asarray(adj["A_p"].detach().cpu(), dtype=float).round(5).tolist(),
        "A_f_mean": [a.mean(0).cpu().numpy().round(5).tolist() for a in adj["A_f"]],
        "A_m_mean": [a.mean(0).cpu().numpy().round(5).tolist() for a in adj["A_m"]],
        "mean_skeleton": positions.round(4).tolist(), "mean_skeleton_source": source,
    })
    for path in heat_paths + graph_paths + [out / "adjacency.json"]:
        print(path)
    return 0


def plot_topology(args: argparse.Namespace) -> int:
    from dspose_graph.viz.topology import plot_mi_matrix, plot_topology_skeleton
    from topology.files import load_topology

    topo = load_topology(args.topology)
    out = Path(args.out)
    written = []
    for path in _outputs(out, "mi_matrix", args.formats):
        if topo.mi is None:
            log.warning("topology %s stores no mutual-information matrix; %s not drawn", args.topology, path.name)
            break
        plot_mi_matrix(topo, path)
        written.append(path)
    for path in _outputs(out, "topology_skeleton", args.formats):
        plot_topology_skeleton(topo, path)
        written.append(path)
    for path in written:
        print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    return plot_adjacency(args) if args.what == "adjacency" else plot_topology(args)
