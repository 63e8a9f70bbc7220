"""``dspose bench AREA``: run the speed/memory benchmarks in ``benchmarks/bench_<AREA>.py``.

Benchmarks print ratios against a reference measured in the same run; they live in the source
checkout (not in the installed package), next to the tests: the checkout of an editable install, or the current
folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

HELP = "run speed/memory benchmarks (benchmarks/bench_<area>.py) of a source checkout"

log = logging.getLogger(__name__)


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the checkout this package runs from (editable install), else of the current folder
    (a checkout beside a ``pip install .``)."""
    beside = Path(__file__).resolve().parents[2] / "benchmarks"
    here = Path.cwd() / "benchmarks"
    return beside if beside.is_dir() or not here.is_dir() else here


def available() -> dict[str, Path]:
    folder = benchmarks_dir()
    return {p.stem[len("bench_"):]: p for p in sorted(folder.glob("bench_*.py"))} if folder.is_dir() else {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("area", help="benchmark name (the <area> of benchmarks/bench_<area>.py) or 'all'")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed on to the benchmark")


def _run_file(path: Path, argv: list[str]) -> int:
    """Run ``path``'s ``main(argv)`` with its folder first on ``sys.path``, as ``python path`` would have it, so
    benchmarks share helpers (``benchmarks/timing.py``)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"dspose_bench_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return int(module.main(argv) or 0)
    finally:
        sys.path.remove(str(path.parent))


def run(args: argparse.Namespace) -> int:
    benches = available()
    if not benches:
        raise FileNotFoundError(f"no benchmarks found in {benchmarks_dir()}: `dspose bench` needs a source checkout")
    if args.area == "all":
        selected = list(benches)
    elif args.area in benches:
        selected = [args.area]
    else:
        raise ValueError(f"unknown benchmark {args.area!r}; available: {sorted(benches)} or 'all'")
    status = 0
    for name in selected:
        print(f"== benchmark: {name} ({benches[name].name})", flush=True)
        status |= _run_file(benches[name], list(args.rest) if len(selected) == 1 else [])
    return status
