"""The suite on a fresh clone: tests that need the shared data skip with one reason and a closing count,
and fail instead under CI (``CI=true``) or ``DSPOSE_REQUIRE_DATA=1``.

Each case runs pytest in a subprocess on a small generated test module next to a copy of this suite's
conftest.py, with ``DSPOSE_DATA`` pointing at a folder that does not exist, at an empty one, or at one that
holds a data set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = '''
def test_reads_the_data(data_root):
    assert data_root.is_dir()

def test_reads_coco_mini(coco_mini):
    assert coco_mini.name == "coco_mini"

def test_needs_nothing():
    assert 1 + 1 == 2
'''


def run_suite(tmp_path: Path, data: Path, **env: str) -> subprocess.CompletedProcess:
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", suite / "conftest.py")
    (suite / "test_generated.py").write_text(MODULE)
    child = {k: v for k, v in os.environ.items() if k not in ("CI", "DSPOSE_REQUIRE_DATA", "PYTEST_ADDOPTS")}
    child.update(DSPOSE_DATA=str(data), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", str(suite)]
    return subprocess.run(command, cwd=suite, env=child, capture_output=True, text=True)


def test_missing_data_skips_with_one_reason_and_a_closing_count(tmp_path):
    res = run_suite(tmp_path, tmp_path / "no-data")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"1 passed, 2 skipped", res.stdout)
    summary = [line for line in res.stdout.splitlines() if line.startswith("2 skipped: needs the shared data folder")]
    assert len(summary) == 1 and "DSPOSE_DATA" in summary[0] and "../shared/data" in summary[0]


def test_empty_data_folder_skips_like_a_missing_one(tmp_path):
    # DSPOSE_DATA set to a folder that exists but holds none of the data sets: skips, not errors.
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_suite(tmp_path, empty)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"1 passed, 2 skipped", res.stdout) and "error" not in res.stdout.lower()
    assert any(line.startswith("2 skipped: needs the shared data folder") for line in res.stdout.splitlines())


def test_folder_without_coco_mini_skips_the_coco_mini_tests(tmp_path):
    data = tmp_path / "data"
    (data / "lspet").mkdir(parents=True)
    res = run_suite(tmp_path, data)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"2 passed, 1 skipped", res.stdout)


@pytest.mark.parametrize("env", [{"CI": "true"}, {"DSPOSE_REQUIRE_DATA": "1"}], ids=["CI", "REQUIRE"])
def test_missing_data_fails_under_ci_or_when_required(tmp_path, env):
    res = run_suite(tmp_path, tmp_path / "no-data", **env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"1 passed, 2 errors", res.stdout)
    assert "needs the shared data folder" in res.stdout and "skipped" not in res.stdout


def test_present_data_runs_and_prints_no_skip_line(tmp_path):
    data = tmp_path / "data"
    (data / "coco_mini").mkdir(parents=True)
    res = run_suite(tmp_path, data, CI="true")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"3 passed", res.stdout) and "needs the shared data folder" not in res.stdout
