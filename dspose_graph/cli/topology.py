"""``dspose topology``: regenerate a physical topology, print its clusters, write the graph file and figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from dspose_graph.io import check_output_dir
from dspose_graph.topology.build import build_topology, format_topology_summary
from dspose_graph.topology.physical import ESTIMATORS, VARIABLES
from dspose_graph.viz.topology import write_topology_files

HELP = "physical-space topology: MI + spectral clustering of joints (mpii, coco, or a COCO-format json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="'mpii', 'coco', or a COCO-format keypoint .json (direct route)")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="raw annotation file (default: $DSPOSE_DATA or ../shared/data; without one, the shipped MI)")
    parser.add_argument("--clusters", default="auto", help="number of clusters, 'auto' (the paper's count where known) or 'eigengap'")
    parser.add_argument("--variable", default="position", choices=sorted(VARIABLES), help="random variable of a joint")
    parser.add_argument("--estimator", default="binned", choices=sorted(ESTIMATORS), help="mutual information estimator")
    parser.add_argument("--bins", type=int, default=None, help="bins per axis for the binned estimator (default: from the sample count)")
    parser.add_argument("--a", type=float, default=0.9, help="A_p = a*A_s + (1-a)*ones, a in (0.7, 1) (Eq. 4)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out)
    if not 0.7 < args.a < 1.0:
        raise ValueError(f"--a {args.a} is outside the paper's range (0.7, 1); b = 1 - a")
    options = {"variable": args.variable, "estimator": args.estimator}
    if args.bins is not None:
        options["bins"] = args.bins
    topo = build_topology(args.dataset, args.annotations, args.clusters, args.seed, **options)
    name = topo.schema.name if args.dataset in ("mpii", "coco") else Path(args.dataset).stem
    print(format_topology_summary(topo, name))
    for p in write_topology_files(topo, args.out, name, a=args.a):
        print(f"  wrote {p}")
    return 0
