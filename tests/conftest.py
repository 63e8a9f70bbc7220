"""Shared fixtures: the real data folder, a small generated COCO-format set, and helpers for the test modules.

Real data (``$DSPOSE_DATA``, else ``../shared/data``) is read in place by the tests that prove data handling;
they take the ``data_root`` fixture or one built on it. Without the folder they skip with one reason and the
run ends with a line counting them; with ``CI=true`` or ``DSPOSE_REQUIRE_DATA=1`` they fail instead, so CI
never passes by skipping. Tests of maths and shapes take ``synthetic_coco`` (generated here, no download).
Test modules share helpers only through the fixtures below, never by importing one another.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import pytest
import yaml

from dspose_graph.io import shared_data_dir
from dspose_graph.topology.build import find_annotations

# Every skip for missing shared files carries this text; the summary at the end counts them by it.
MISSING = "needs the shared data folder"
HOW_TO_GET = ("set DSPOSE_DATA=/path/to/data or place the folder at ../shared/data "
              "(its contents and sources: docs/datasets.md, 'The shared data folder')")


def data_required() -> bool:
    """Whether missing shared data fails the tests that need it (CI) rather than skipping them."""
    return os.environ.get("DSPOSE_REQUIRE_DATA") == "1" or os.environ.get("CI", "").lower() in ("true", "1")


def _missing(what: str) -> NoReturn:
    message = f"{MISSING} ({what} not found); {HOW_TO_GET}"
    if data_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MISSING in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} skipped: {MISSING} (real MPII/COCO/LSPET files); to run them, {HOW_TO_GET}. "
            "With CI=true or DSPOSE_REQUIRE_DATA=1 they fail instead of skipping.")


# --- real data ------------------------------------------------------------------------------------------------

# The data sets the tests read from the shared folder (docs/datasets.md, "The shared data folder"). A folder
# holding none of them (``DSPOSE_DATA`` pointing at an empty or unrelated folder) counts as missing.
SHARED_DATASETS = ("mpii", "coco_mini", "lspet", "mmpose_fixtures")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_dir()
    if root is None or not root.is_dir():
        _missing("$DSPOSE_DATA or ../shared/data")
    if not any((root / name).is_dir() for name in SHARED_DATASETS):
        _missing(f"{root} holds none of {', '.join(SHARED_DATASETS)}")
    return root


@pytest.fixture(scope="session")
def mpii_annotations(data_root: Path) -> Path:
    path = find_annotations("mpii")
    if path is None:
        _missing(f"an MPII annotation file in {data_root / 'mpii'}")
    return path


@pytest.fixture(scope="session")
def coco_mini(data_root: Path) -> Path:
    if not (data_root / "coco_mini").is_dir():
        _missing(f"{data_root / 'coco_mini'}")
    return data_root / "coco_mini"


@pytest.fixture(scope="session")
def paper_tables() -> Path:
    """The paper's tables transcribed as markdown, beside the data folder (``../shared/paper_tables.md``)."""
    root = shared_data_dir()
    path = root.parent / "paper_tables.md" if root is not None else None
    if path is None or not path.is_file():
        _missing("../shared/paper_tables.md")
    return path


# --- generated data -------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated COCO-17 set in coco_mini's layout: 16 train and 12 val images of 1-3 people, 192x256.

    ``annotations/person_keypoints_{train,val}.json`` and ``images/{train,val}/``; a pure function of the seed.
    """
    from dspose_graph.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic") / "coco"
    generate_dataset(root, 16, 12, image_size=(192, 256), seed=7, persons_per_image=(1, 3))
    return root


# --- helpers shared by several modules --------------------------------------------------------------------------

def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


@pytest.fixture(scope="session")
def child_env() -> Callable[[], dict[str, str]]:
    """``child_env()``: the environment for a ``dspose`` subprocess (one thread, fixed hash seed)."""
    return _child_env


def _signal_training(config: Path, env: dict[str, str], sig: int, at_step: int, cwd: Path) -> tuple[int, str, str]:
    """Run ``dspose -v train config``, send ``sig`` once its log reaches optimiser step ``at_step``, and wait (at most
    300 s) for it to end. Returns the exit status, the log up to the signal and the log after it.

    The child gets SIGINT's default disposition: a shell without job control starts background jobs with SIGINT
    ignored and children inherit that (the run would then train all its epochs), as from a terminal it does not.
    """
    proc = subprocess.Popen([sys.executable, "-m", "dspose_graph", "-v", "train", str(config)], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"step (\d+) loss", line)
        if m and int(m.group(1)) >= at_step:
            proc.send_signal(sig)
            break
    try:
        _, rest = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"dspose train did not stop within 300 s of {signal.Signals(sig).name}")
    return proc.returncode, "".join(lines), rest


@pytest.fixture(scope="session")
def signal_training() -> Callable[..., tuple[int, str, str]]:
    """``signal_training(config, env, sig, at_step, cwd)``: interrupt a training child at a step (see above)."""
    return _signal_training


def _write_config(path: Path, coco_mini: Path, out: Path, **run) -> Path:
    """A tiny real-data config: dspose_t on the first 24 coco_mini persons, 2 epochs of 6 steps."""
    cfg = {
        "model": {"name": "dspose_t"},
        "data": {"kind": "coco", "root": str(coco_mini), "train_ann": "annotations/person_keypoints_train.json",
                 "train_images": "images/train", "val_ann": "annotations/person_keypoints_val.json",
                 "val_images": "images/val", "limit_train": 24, "limit_val": 8},
        "optim": {"lr": 1e-3, "epochs": 2, "batch_size": 4, "milestones": [1], "grad_clip": 1.0},
        "eval": {"every": 0, "flip_test": True, "batch_size": 8},
        "run": {"out_dir": str(out), "seed": 3, "deterministic": True, "workers": 1, "checkpoint_every": 1,
                "log_every": 1, "progress": False, "tensorboard": False, **run},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def write_config() -> Callable[..., Path]:
    """``write_config(path, coco_root, out_dir, **run)``: write a tiny dspose_t training config, return its path."""
    return _write_config


def _make_checkpoint(path: Path, preset: str = "dspose_t", seed: int = 0, **overrides) -> Path:
    """Save a seeded, randomly initialised ``preset`` model as a dspose-graph checkpoint at ``path``."""
    # Imported here: this module is loaded by every pytest run, and most need no torch model.
    import torch

    from dspose_graph.models import create_model
    from dspose_graph.models.checkpoint import checkpoint_state, save_checkpoint

    torch.manual_seed(seed)
    model = create_model(preset, **overrides)
    return save_checkpoint(path, checkpoint_state(model, name=preset, provenance={"test": "random init"}))


@pytest.fixture(scope="session")
def make_checkpoint() -> Callable[..., Path]:
    """``make_checkpoint(path, preset="dspose_t", seed=0, **overrides)``: a random-init checkpoint file."""
    return _make_checkpoint


def _marker_state(value: float, size: int = 8) -> dict[str, Any]:
    """A minimal checkpoint dict whose ``epoch`` and ``size x size`` weight both carry ``value``."""
    import torch

    return {"model": {"name": "dspose_t", "config": {}}, "schema": {"name": "coco"},
            "state_dict": {"w": torch.full((size, size), value)}, "epoch": int(value)}


@pytest.fixture(scope="session")
def marker_state() -> Callable[..., dict[str, Any]]:
    """``marker_state(value, size=8)``: a small checkpoint dict that tells which save a file came from."""
    return _marker_state
