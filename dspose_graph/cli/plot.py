"""``dspose plot``: figures of a trained model's adjacencies (``viz.learned``) and of the physical topology.

``dspose plot adjacency --weights CKPT|NAME (--image FILE [--box X Y W H] | --data CONFIG [--num N])``
    runs the model on one image or on N validation samples of a training config and writes
    ``adjacency.{png,pdf}``, ``learned_graph.{png,pdf}`` and ``adjacency.json``.
``dspose plot topology [--topology mpii|coco|FILE]`` writes ``mi_matrix`` and ``topology_skeleton``.
"""

from __future__ import annotations

import argparse

HELP = "figures: learned adjacency heatmaps and graphs (adjacency), physical clusters (topology)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="FIGURE", required=True)
    a = sub.add_parser("adjacency", help="A_p, A_f, A_m and p of a trained model, as heatmaps and graphs")
    a.add_argument("--weights", required=True, help="checkpoint (.pt) or shipped weight name of a graph-head model")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one image; the whole image (or --box) is the person")
    src.add_argument("--data", help="a training config YAML; its validation split supplies the samples")
    a.add_argument("--box", type=float, nargs=4, metavar=("X", "Y", "W", "H"), help="person box in --image")
    a.add_argument("--num", type=int, default=16, help="--data: number of samples (default 16)")
    a.add_argument("--split", default="val", choices=("train", "val"),
                   help="--data: which split of the config (its data.train_* or data.val_* files; default val)")
    a.add_argument("--sample", type=int, default=0, help="which sample the per-sample A_f panel shows")
    a.add_argument("--device", default="cpu")
    for q in (a, sub.add_parser("topology", help="mutual-information matrix and clusters of a physical topology")):
        q.add_argument("--out", required=True, help="output folder")
        q.add_argument("--formats", default="png,pdf", help="comma-separated figure formats (png, pdf, svg)")
    sub.choices["topology"].add_argument("--topology", default="mpii", help="'mpii', 'coco' (shipped) or a JSON file")


def run(args: argparse.Namespace) -> int:
    from dspose_graph.io import check_output_dir
    from dspose_graph.viz.learned import adjacency_figures
    from dspose_graph.viz.topology import write_topology_figures
    from topology.files import load_topology

    out = check_output_dir(args.out)
    paths = adjacency_figures(args.weights, out, image=args.image, box=args.box, data=args.data, split=args.split,
                              num=args.num, sample=args.sample, device=args.device, formats=args.formats) \
        if args.what == "adjacency" else \
        write_topology_figures(load_topology(args.topology), out, args.formats, source=args.topology)
    print("\n".join(map(str, paths)))
    return 0
