"""Shared fixtures: the real datasets in ../shared/data, read in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dspose_graph.io import shared_data_dir
from topology.build import find_annotations


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_dir()
    if root is None or not root.is_dir():
        if os.environ.get("DSPOSE_SKIP_DATA_TESTS") == "1":
            pytest.skip("real data not present and DSPOSE_SKIP_DATA_TESTS=1")
        pytest.fail("real data folder not found: set DSPOSE_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="session")
def mpii_annotations(data_root: Path) -> Path:
    path = find_annotations("mpii")
    if path is None:
        pytest.fail(f"no MPII annotation file in {data_root / 'mpii'}")
    return path


@pytest.fixture(scope="session")
def coco_mini(data_root: Path) -> Path:
    return data_root / "coco_mini"
