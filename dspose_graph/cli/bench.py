"""``dspose bench AREA``: run the speed/memory benchmarks in ``benchmarks/bench_<AREA>.py`` of a source checkout
(:mod:`dspose_graph.benchmarks` finds and runs them)."""

from __future__ import annotations

import argparse

from dspose_graph.benchmarks import run_benchmark, select_benchmarks

HELP = "run speed/memory benchmarks (benchmarks/bench_<area>.py) of a source checkout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("area", help="benchmark name (the <area> of benchmarks/bench_<area>.py) or 'all'")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed on to the benchmark")


def run(args: argparse.Namespace) -> int:
    selected = select_benchmarks(args.area)
    status = 0
    for name, path in selected.items():
        print(f"== benchmark: {name} ({path.name})", flush=True)
        status |= run_benchmark(path, list(args.rest) if len(selected) == 1 else [])
    return status
