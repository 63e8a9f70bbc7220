"""The demo's figures (topologies, learned adjacency, predictions) and its ``report.md``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from dspose_graph.data.image import normalize_batch
from dspose_graph.io import atomic_path

log = logging.getLogger(__name__)


def topology_section(out: Path, schema: str | dict[str, Any]) -> list[str]:
    """Build (or load) the MPII and COCO physical topologies and, for another built-in skeleton (LSP), the
    MPII clusters mapped onto it; write their figures under ``out``, return report lines."""
    from topology.build import build_topology, find_annotations
    from topology.files import PhysicalTopology, load_topology
    from topology.mapping import map_clusters
    from topology.schemas import SCHEMAS

    from dspose_graph.viz.topology import plot_mi_matrix, plot_topology_skeleton

    lines: list[str] = []
    topos: dict[str, PhysicalTopology] = {}
    mpii_ann = find_annotations("mpii")
    extra = [schema] if isinstance(schema, str) and schema not in ("mpii", "coco") else []
    for dataset in ("mpii", "coco", *extra):
        if dataset == "mpii" and mpii_ann is not None:
            topo = build_topology("mpii", annotations=mpii_ann, clusters="auto", seed=0)
            how = f"built from {mpii_ann.name} (mutual information + spectral clustering)"
        elif dataset in extra:
            mpii = topos["mpii"]
            topo = PhysicalTopology(SCHEMAS[dataset], map_clusters(mpii.schema, mpii.labels, SCHEMAS[dataset]))
            how = f"the MPII clusters mapped to {dataset.upper()} joints by topology.mapping: the model's A_p"
        else:
            topo = load_topology(dataset)
            how = "shipped topology file" + (" (MPII groups mapped to COCO keypoints)" if dataset == "coco" else "")
        topos[dataset] = topo
        lines.append(f"{dataset.upper()} ({how}): {len(topo.groups)} groups")
        lines += [f"  group {i + 1}: {', '.join(group)}" for i, group in enumerate(topo.named_groups)]
        plot_topology_skeleton(topo, out / f"topology_{dataset}.png")
        if topo.mi is not None:
            plot_mi_matrix(topo, out / f"mi_{dataset}.png")
    return lines


@torch.no_grad()
def adjacency_figure(model: torch.nn.Module, val_set: Dataset, path: Path) -> str | None:
    """Draw the learned A_p / A_f / A_m on up to 16 held-out crops; ``None`` when drawn, else why not.

    A model without a graph head (TokenPose's MLP head) has no adjacency to draw.
    """
    from dspose_graph.viz.adjacency import plot_adjacency_heatmaps

    was_training = model.training
    model.eval()
    batch = normalize_batch(torch.stack([val_set[i]["image"] for i in range(min(16, len(val_set)))]))
    _, adjacency = model(batch, return_adjacency=True)
    model.train(was_training)
    if adjacency is None:
        head = getattr(getattr(model, "config", None), "head", "?")
        return f"no adjacency figure: the {head!r} head mixes no keypoints through a graph (no A_f or A_m)"
    plot_adjacency_heatmaps(adjacency, model.schema, path, title="learned adjacency (held-out)")
    return None


def predictions_figure(model: torch.nn.Module, val_set: Dataset, path: Path, *, flip_test: bool,
                       count: int = 8, cols: int = 4) -> Path:
    """Predictions on the first ``count`` held-out persons, each drawn on its person crop, as a grid PNG."""
    import cv2

    from dspose_graph.data import load_image, warp_image
    from dspose_graph.train.evaluate import predict_dataset
    from dspose_graph.viz.skeleton import draw_skeleton

    subset = Subset(val_set, list(range(min(count, len(val_set)))))
    pred = predict_dataset(model, subset, batch_size=count, flip_test=flip_test)
    tiles = []
    for i in range(len(subset)):
        meta = subset[i]["meta"]
        keypoints = np.concatenate([pred["coords"][i], pred["scores"][i][:, None]], axis=1)
        drawn = draw_skeleton(load_image(meta["image_file"]), keypoints[None], model.schema, thr=0.2)
        tiles.append(warp_image(drawn, meta["center"].numpy(), meta["scale"].numpy(), 0.0, (192, 256)))
    h, w = tiles[0].shape[:2]
    grid = np.full((-(-len(tiles) // cols) * h, cols * w, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode the predictions figure {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.tobytes())
    return path


def render_report(*, summary: str, data_description: str, generator: list[str] | None, table: str,
                  verdict_text: str, goals: list[str] | None, evaluation: str, topology: list[str],
                  notes: list[str], adjacency_drawn: bool) -> str:
    """``report.md``: what ran, the data, the held-out table and verdict, the topology, the files."""
    lines = ["# dspose demo report", "", summary, "", "## Data", "", data_description, ""]
    if generator:
        lines += ["The generated people (the same distributions for training and held-out images):", "",
                  *[f"- {g}" for g in generator], ""]
    lines += ["## Held-out metrics", "", evaluation, "", table, "", verdict_text, ""]
    if goals:
        lines += ["Goals the demo sets itself on this data (docs/training.md, Demo):", "", *goals, ""]
    lines += [*notes, "", "## Physical topology", "", "```", *topology, "```", "", "## Files", "",
              "- `topology_*.png`, `mi_*.png`: topology figures"]
    if adjacency_drawn:
        lines.append("- `adjacency.png`: learned A_p / A_f / A_m on held-out images")
    lines += ["- `predictions.png`: predictions on held-out images (the person's left orange, right blue)",
              "- `train/loss_curve.png`, `train/steps.csv`, `train/epochs.csv`: learning curve and logs",
              "- `train/last.pt`: the checkpoint (`dspose train --resume` / `Predictor` load it)", "",
              "![loss curve](train/loss_curve.png)", "", "![predictions](predictions.png)", ""]
    return "\n".join(lines) + "\n"
