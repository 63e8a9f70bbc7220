"""``dspose topology``: regenerate a physical topology, print its clusters, write the graph file and figures."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dspose_graph.graph.keypoint_graph import KeypointGraph
from dspose_graph.io import check_output_dir
from dspose_graph.viz.topology import plot_mi_matrix, plot_topology_skeleton
from dspose_graph.topology.build import build_topology, compare_with_shipped
from dspose_graph.topology.files import save_topology
from dspose_graph.topology.physical import ESTIMATORS, VARIABLES

log = logging.getLogger(__name__)

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
    params = topo.provenance.get("parameters", {})
    origin = "shipped MI" if params.get("from_shipped_mi") else topo.provenance.get("source", "?")
    print(f"{name}: {topo.num_clusters} clusters from {origin}")
    for i, group in enumerate(topo.named_groups):
        print(f"  {i}: {', '.join(group)}")
    if "direct_groups" in params:
        print(f"  (direct clustering of this MI into {len(params['direct_groups'])}: "
              + " | ".join(", ".join(g) for g in params["direct_groups"]) + ")")
    if not params.get("from_shipped_mi"):
        cmp = compare_with_shipped(topo)
        if cmp is not None:
            verdict = "equals" if cmp["same_partition"] else "DIFFERS FROM"
            diff = "" if cmp["max_abs_mi_difference"] is None else f", max |MI - shipped MI| = {cmp['max_abs_mi_difference']:.2e}"
            print(f"  partition {verdict} the shipped {cmp['shipped_file']}{diff}")
    graph = KeypointGraph.from_topology(topo, a=args.a)
    written = [save_topology(topo, args.out / f"{name}_topology.json"), graph.save(args.out / f"{name}_graph.json")]
    if topo.mi is not None:
        plot_mi_matrix(topo, args.out / f"{name}_mi.png")
        written.append(args.out / f"{name}_mi.png")
    plot_topology_skeleton(topo, args.out / f"{name}_skeleton.png")
    written.append(args.out / f"{name}_skeleton.png")
    for p in written:
        print(f"  wrote {p}")
    return 0
