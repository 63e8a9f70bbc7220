"""CPUs for DataLoader workers: the affinity mask capped by a container's cgroup CPU quota (v2 and v1 trees
built in a temporary folder, as a container would show them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dspose_graph.train import cpus as C
from dspose_graph.train import distributed as D


def _v2(root: Path, levels: dict[str, str], own: str) -> Path:
    """A cgroup v2 tree: ``levels`` maps a cgroup path to its ``cpu.max``; returns a /proc/self/cgroup file."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for path, line in levels.items():
        folder = root / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(line + "\n")
    proc = root.parent / "proc_self_cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def test_cgroup_v2_quota_is_the_tightest_level(tmp_path):
    root = tmp_path / "cg"
    proc = _v2(root, {"/": "max 100000", "/kube": "400000 100000", "/kube/pod": "250000 100000"}, "/kube/pod")
    assert C.cgroup_cpu_limit(root, proc) == 2.5
    proc = _v2(root, {"/kube": "150000 100000"}, "/kube/pod")
    assert C.cgroup_cpu_limit(root, proc) == 1.5  # a parent's limit binds its children
    # In a cgroup namespace the container sees itself as "/": the root's cpu.max is its limit.
    other = tmp_path / "ns"
    assert C.cgroup_cpu_limit(other, _v2(other, {"/": "800000 100000"}, "/")) == 8.0
    free = tmp_path / "free"
    assert C.cgroup_cpu_limit(free, _v2(free, {"/": "max 100000"}, "/")) is None


def test_cgroup_v1_quota_and_no_cgroup_at_all(tmp_path):
    root = tmp_path / "cg"
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("600000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc"
    proc.write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    assert C.cgroup_cpu_limit(root, proc) == 6.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert C.cgroup_cpu_limit(root, proc) is None
    assert C.cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent_proc") is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity (Linux)")
def test_auto_workers_follow_the_containers_quota_not_the_hosts_cores(tmp_path, monkeypatch):
    # A 64-core host, a container limited to 4 CPUs (docker --cpus 4): 3 workers (4 less the rank's own
    # process), not the 16 the affinity mask alone gives.
    root = tmp_path / "cg"
    proc = _v2(root, {"/": "400000 100000"}, "/")
    monkeypatch.setattr(C, "CGROUP_ROOT", root)
    monkeypatch.setattr(C, "PROC_CGROUP", proc)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert C.available_cpus() == 4
    assert D.workers_per_rank("auto", D.DistInfo()) == 3
    two = D.DistInfo(rank=0, world_size=2, local_rank=0, local_world_size=2)
    assert D.workers_per_rank("auto", two) == 1
    (root / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs: rounded up, the half CPU still runs a worker
    assert C.available_cpus() == 3
    (root / "cpu.max").write_text("max 100000\n")
    assert D.workers_per_rank("auto", D.DistInfo()) == 16
