"""The speed/memory benchmarks of a source checkout (``benchmarks/bench_<area>.py``): where they are, which exist,
and running one in this process. ``dspose bench AREA`` is their command line.

Benchmarks print ratios against a reference measured in the same run; they live in the source checkout (not in
the installed package), next to the tests: the checkout of an editable install, or the current folder.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the checkout this package runs from (editable install), else of the current folder
    (a checkout beside a ``pip install .``)."""
    beside = Path(__file__).resolve().parents[1] / "benchmarks"
    here = Path.cwd() / "benchmarks"
    return beside if beside.is_dir() or not here.is_dir() else here


def available() -> dict[str, Path]:
    """Benchmark name (the ``<area>`` of ``bench_<area>.py``) -> its file, in name order."""
    folder = benchmarks_dir()
    return {p.stem[len("bench_"):]: p for p in sorted(folder.glob("bench_*.py"))} if folder.is_dir() else {}


def select_benchmarks(area: str) -> dict[str, Path]:
    """The benchmark named ``area``, or all of them for ``"all"``; ``FileNotFoundError`` without a checkout,
    ``ValueError`` (listing the names) for an unknown one."""
    benches = available()
    if not benches:
        raise FileNotFoundError(f"no benchmarks found in {benchmarks_dir()}: `dspose bench` needs a source checkout")
    if area == "all":
        return benches
    if area not in benches:
        raise ValueError(f"unknown benchmark {area!r}; available: {sorted(benches)} or 'all'")
    return {area: benches[area]}


def run_benchmark(path: Path, argv: list[str]) -> int:
    """Run ``path``'s ``main(argv)`` with its folder first on ``sys.path``, as ``python path`` would have it, so
    benchmarks share helpers (``benchmarks/timing.py``). Returns its exit status."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"dspose_bench_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return int(module.main(argv) or 0)
    finally:
        sys.path.remove(str(path.parent))
