"""How many CPUs this process may really use: its CPU affinity, capped by the container's CPU quota.

A container limited with ``docker run --cpus 8``, a Kubernetes CPU limit or a SLURM cgroup usually still
sees every core of the host in its affinity mask (``os.sched_getaffinity``): the limit is a cgroup quota
(CFS bandwidth), not a mask. Sizing DataLoader workers from the mask alone then starts, on a 128-core host
limited to 8 CPUs, 16 workers per rank that are throttled in turn. The quota is read from cgroup v2
(``cpu.max`` of the process's cgroup and its ancestors, the tightest one) or cgroup v1
(``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_limit(text: str | None) -> float | None:
    """CPUs of a cgroup v2 ``cpu.max`` line ``"QUOTA PERIOD"`` (``"max ..."``: no limit)."""
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _own_cgroup(proc_cgroup: Path) -> tuple[str | None, dict[str, str]]:
    """This process's cgroup v2 path and its v1 paths by controller, from ``/proc/self/cgroup``."""
    v2, v1 = None, {}
    for line in (_read(proc_cgroup) or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        if fields[0] == "0" and fields[1] == "":
            v2 = fields[2]
        for controller in fields[1].split(","):
            if controller:
                v1[controller] = fields[2]
    return v2, v1


def cgroup_cpu_limit(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``2.5`` for 250 ms per 100 ms), ``None`` without one.

    Under cgroup v2 every level from the process's cgroup up to ``root`` may set ``cpu.max``; the tightest wins.
    Inside a container the process's path is usually ``/`` (a cgroup namespace) and ``root/cpu.max`` holds the
    container's limit. Under cgroup v1 the ``cpu`` controller's ``cpu.cfs_quota_us`` (``-1``: none).
    ``root`` and ``proc_cgroup`` default to :data:`CGROUP_ROOT` and :data:`PROC_CGROUP`.
    """
    root = CGROUP_ROOT if root is None else root
    v2, v1 = _own_cgroup(PROC_CGROUP if proc_cgroup is None else proc_cgroup)
    limits: list[float] = []
    if (root / "cgroup.controllers").exists():
        folder = (root / (v2 or "/").lstrip("/")).resolve()
        top = root.resolve()
        while True:
            limit = _v2_limit(_read(folder / "cpu.max"))
            if limit is not None:
                limits.append(limit)
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
        return min(limits) if limits else None
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / mount
        if not base.is_dir():
            continue
        for folder in (base / v1.get("cpu", "/").lstrip("/"), base):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            try:
                q, p = int(quota or "-1"), int(period or "0")
            except ValueError:
                continue
            if q > 0 and p > 0:
                return q / p
    return None


def available_cpus(root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup quota rounded up (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None and math.ceil(limit) < cpus:
        log.debug("CPU quota of %.2f CPUs caps the %d CPUs of the affinity mask", limit, cpus)
        cpus = math.ceil(limit)
    return max(1, cpus)
