"""Speed of regenerating the MPII physical topology from the 22,246 training persons (goal: < 2 s).

Prints each stage and two ratios measured in the same run: the whole regeneration against the 2 s
goal, and the vectorised binned MI (one bincount for all pairs) against a per-pair loop doing
the same histogram arithmetic. Run: ``python benchmarks/bench_topology.py [--annotations PATH] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

from dspose_graph.topology.annotations import load_mpii_statistics
from dspose_graph.topology.build import find_annotations
from dspose_graph.topology.physical import default_bins, joint_variables, mi_binned, normalize_mi, spectral_clustering
from dspose_graph.topology.schemas import MPII16

GOAL_S = 2.0


def mi_binned_loop(x: np.ndarray, valid: np.ndarray, bins: int) -> np.ndarray:
    """Reference: the same quantile-binned plug-in MI, one ``bincount`` per pair."""
    n, k, d = x.shape
    s = bins ** d
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    codes = np.zeros((n, k), dtype=np.int64)
    for j in range(k):
        v = valid[:, j]
        c = np.zeros(int(v.sum()), dtype=np.int64)
        for a in range(d):
            c = c * bins + np.searchsorted(np.quantile(x[v, j, a], qs), x[v, j, a], side="right")
        codes[v, j] = c
    mi = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            m = valid[:, i] & valid[:, j]
            h = np.bincount(codes[m, i] * s + codes[m, j], minlength=s * s).reshape(s, s) / m.sum()
            pi, pj = h.sum(1, keepdims=True), h.sum(0, keepdims=True)
            nz = h > 0
            mi[i, j] = mi[j, i] = (h[nz] * np.log(h[nz] / (pi @ pj)[nz])).sum()
    return mi


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


VARIANTS = (
    [("position", "binned", {"bins": b}, None) for b in (4, 5, 6, 7, 8, 9, 10, 12, 14, 16)]
    + [("position", "gaussian", {}, None), ("position", "ksg", {"k": 3, "max_samples": 4000}, None),
       ("root_offset", "binned", {"bins": 10}, "pelvis"), ("root_offset", "binned", {"bins": 10}, "thorax"),
       ("visibility", "binned", {"bins": 2}, None)]
)


def variants_table(stats) -> None:
    """Which joint variable / MI estimator reproduces the paper's six MPII clusters (docs/topology.md)."""
    from dspose_graph.topology.physical import physical_mi

    paper = {frozenset(MPII16.keypoints[i] for i in g) for g in MPII16.groups}
    print("| variable | estimator | parameters | paper partition | time | clusters that differ |")
    print("|---|---|---|---|---|---|")
    for variable, estimator, params, root in VARIANTS:
        t0 = time.perf_counter()
        mi = physical_mi(stats, variable=variable, estimator=estimator, root=root, **params)
        labels = spectral_clustering(mi, 6)
        dt = time.perf_counter() - t0
        got = {frozenset(MPII16.keypoints[i] for i in np.flatnonzero(labels == c)) for c in np.unique(labels)}
        diff = "; ".join("{" + ", ".join(sorted(g)) + "}" for g in sorted(got - paper, key=sorted))
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) + (f", root={root}" if root else "")
        print(f"| {variable} | {estimator} | {shown} | {'yes' if got == paper else 'no'} | {dt:.2f} s | {diff} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="print the variable/estimator table instead")
    args = parser.parse_args(argv)
    path = find_annotations("mpii", args.annotations)
    if path is None:
        print("MPII annotations not found (set DSPOSE_DATA or pass --annotations); nothing to time")
        return 1
    if args.variants:
        variants_table(load_mpii_statistics(path))
        return 0
    t_json, _ = _best(lambda: json.load(gzip.open(path, "rt")), args.repeat)
    t_load, stats = _best(lambda: load_mpii_statistics(path), args.repeat)
    x, valid = joint_variables(stats)
    bins = default_bins(int(valid.sum(0).min()))
    t_mi, mi = _best(lambda: normalize_mi(mi_binned(x, valid, bins)), args.repeat)
    t_ref, mi_ref = _best(lambda: normalize_mi(mi_binned_loop(x, valid, bins)), args.repeat)
    t_cluster, labels = _best(lambda: spectral_clustering(mi, 6), args.repeat)
    total = t_load + t_mi + t_cluster
    same = bool(np.allclose(mi, mi_ref, atol=1e-9)) and len({frozenset(np.flatnonzero(labels == c)) for c in range(6)}
                                                             ^ {frozenset(g) for g in MPII16.groups}) == 0
    rows = [
        ("json.load of the raw file (floor)", t_json),
        ("load + check 22,246 persons", t_load),
        (f"binned MI, all pairs (bins={bins})", t_mi),
        ("binned MI, per-pair loop (reference)", t_ref),
        ("spectral clustering (6, 20 inits)", t_cluster),
        ("regenerate total (load + MI + cluster)", total),
    ]
    print(f"MPII topology regeneration, {stats.num_persons} persons, best of {args.repeat}")
    for name, t in rows:
        print(f"  {name:<42s} {t * 1000:8.1f} ms")
    print(f"  total / {GOAL_S:.0f} s goal: {total / GOAL_S:.2f}   per-pair loop / vectorised MI: {t_ref / t_mi:.1f}x"
          f"   same MI and paper partition: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
