"""A cluster job's run folder and command line: the folder lock on file systems without hard links, after
preemption, across hosts, containers and torchrun restarts; SIGTERM; torchrun's error file;
the global batch of the documented multi-node commands."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dspose_graph import io
from dspose_graph.io import LOCK_NAME, FolderLock, FolderLockedError

REPO = Path(__file__).resolve().parents[1]


def _no_hard_links(monkeypatch) -> None:
    def refuse(src, dst, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(src), None, str(dst))

    monkeypatch.setattr(os, "link", refuse)


def test_lock_works_without_hard_links(tmp_path, monkeypatch):
    _no_hard_links(monkeypatch)
    lock = FolderLock(tmp_path / "run").acquire()
    assert (tmp_path / "run" / LOCK_NAME).read_text().split()[:2] == [str(os.getpid()), socket.gethostname()]
    with pytest.raises(FolderLockedError, match=f"pid {os.getpid()}"):
        FolderLock(tmp_path / "run").acquire()
    lock.release()
    # Lock and temporary file gone: the folder the lock made is empty again, and removed.
    assert not (tmp_path / "run").exists()


def _lock_file(folder: Path, text: str, age_s: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(text)
    stamp = path.stat().st_mtime - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_a_lock_from_another_host_is_taken_over_once_it_is_no_longer_refreshed(tmp_path, caplog):
    fresh = _lock_file(tmp_path / "a", "4242 node7 start=1234\n")
    with pytest.raises(FolderLockedError, match="pid 4242 on host node7"):
        FolderLock(tmp_path / "a").acquire()
    assert fresh.read_text() == "4242 node7 start=1234\n"
    # A job killed on node7 (SIGKILL, a lost node) stopped refreshing its lock.
    _lock_file(tmp_path / "b", "4242 node7 start=1234\n", age_s=io.LOCK_STALE_S + 60)
    with FolderLock(tmp_path / "b"):
        assert (tmp_path / "b" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert "not refreshed for" in caplog.text


def test_a_held_lock_is_refreshed(tmp_path):
    with FolderLock(tmp_path / "run") as lock:
        path = _lock_file(tmp_path / "run", lock.path.read_text(), age_s=io.LOCK_STALE_S + 60)
        before = path.stat().st_mtime
        lock.refresh()
        assert path.stat().st_mtime > before + io.LOCK_STALE_S


def test_our_own_pid_in_a_lock_from_an_earlier_container_is_not_us(tmp_path):
    # Same hostname, pids numbered from 1 again: the old lock names this very pid, started at another time.
    _lock_file(tmp_path / "run", f"{os.getpid()} {socket.gethostname()} start=1\n")
    with FolderLock(tmp_path / "run"):
        pass
    # An old-format lock ("pid host") naming this process, which holds no lock: also a leftover.
    _lock_file(tmp_path / "run", f"{os.getpid()} {socket.gethostname()}\n")
    with FolderLock(tmp_path / "run"):
        pass


def test_a_restarted_torchrun_attempt_takes_over_its_previous_attempts_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-17")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    # Attempt 0's rank 0 ran on another node and was killed there a moment ago.
    _lock_file(tmp_path / "run", "4242 node7 start=1234 job=job-17 attempt=0\n")
    with FolderLock(tmp_path / "run"):
        assert "job=job-17 attempt=1" in (tmp_path / "run" / LOCK_NAME).read_text()
    # Another job's fresh lock is still refused.
    _lock_file(tmp_path / "run", "4242 node7 start=1234 job=job-99 attempt=0\n")
    with pytest.raises(FolderLockedError):
        FolderLock(tmp_path / "run").acquire()


def test_sigterm_releases_the_lock_and_exits_143(tmp_path, child_env):
    script = ("import sys\n"
              "from dspose_graph.cli.main import run_guarded\n"
              "from dspose_graph.process import sigterm_as_interrupt\n"
              "from dspose_graph.io import FolderLock\n"
              "def hold(args):\n"
              f"    with FolderLock({str(tmp_path / 'run')!r}):\n"
              "        print('locked', flush=True)\n"
              "        sys.stdin.readline()\n"
              "with sigterm_as_interrupt():\n"
              "    code = run_guarded('train', hold, None)\n"
              "sys.exit(code)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO)
    try:
        assert proc.stdout.readline() == "locked\n"
        assert (tmp_path / "run" / LOCK_NAME).exists()
        proc.send_signal(signal.SIGTERM)  # preemption
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err
    assert not (tmp_path / "run" / LOCK_NAME).exists(), "the finally block ran"


def test_a_failed_command_writes_torchruns_error_file(tmp_path, child_env):
    env = dict(child_env(), TORCHELASTIC_ERROR_FILE=str(tmp_path / "error.json"))
    res = subprocess.run([sys.executable, "-m", "dspose_graph", "train", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 2
    record = json.loads((tmp_path / "error.json").read_text())["message"]
    assert record["message"] == f"FileNotFoundError: config file not found: {tmp_path / 'missing.yaml'}"
    assert "Traceback" in record["extraInfo"]["py_callstack"] and int(record["extraInfo"]["timestamp"]) > 0


def _documented_runs() -> list[tuple[str, str]]:
    """``(file, command)`` of every documented torchrun training command of a paper config."""
    runs = []
    for doc in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        text = doc.read_text().replace("\\\n", " ")
        runs += [(doc.name, line.strip()) for line in text.splitlines()
                 if "torchrun" in line and re.search(r"experiments/\S+\.yaml", line) and " train " in line]
    return runs


def test_documented_multi_gpu_commands_keep_the_configs_global_batch():
    runs = _documented_runs()
    assert any("--nnodes 2" in cmd for _, cmd in runs)
    for doc, cmd in runs:
        sets = dict(m.groups() for m in re.finditer(r"--set (\S+?)=(\S+)", cmd))
        if "optim.lr" in sets:
            continue  # an lr chosen for this global batch (the linear rule)
        from dspose_graph.train.config import load_config

        config = load_config(REPO / re.search(r"experiments/\S+\.yaml", cmd).group(0))
        nodes = int(re.search(r"--nnodes[ =](\d+)", cmd).group(1)) if "--nnodes" in cmd else 1
        per_node = int(re.search(r"--nproc[-_]per[-_]node[ =](\d+)", cmd).group(1))
        batch = int(sets.get("optim.batch_size", config.optim.batch_size))
        accumulate = sets.get("optim.accumulate", config.optim.accumulate)
        steps = config.optim.global_batch // (nodes * per_node * batch) if accumulate == "auto" else int(accumulate)
        assert nodes * per_node * batch * steps == config.optim.global_batch, (doc, cmd)


def test_keys_for_clusters_are_in_the_config_reference():
    text = (REPO / "docs" / "training.md").read_text()
    for key in ("optim.accumulate", "run.sync_bn", "run.keep_checkpoints", "run.dist_timeout", "--resume auto",
                "--log-ranks"):
        assert key in text, key
