"""The checkpoints of a run folder: which one ``--resume auto`` continues from, which epoch copies are kept, and
what an interrupted run says about resuming.

``last.pt`` is the newest state (every epoch end, and every ``run.checkpoint_every`` steps), ``last.pt.prev`` the
one it replaced, ``best.pt`` the best held-out epoch, and with ``run.keep_checkpoints`` the epoch ends as
``epoch_NNNN.pt`` (hard links of that epoch's ``last.pt`` where the file system has them, copies elsewhere).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

from dspose_graph.models.checkpoint import link_or_copy, load_checkpoint, previous_path

log = logging.getLogger(__name__)

AUTO = "auto"
LAST = "last.pt"
EPOCH_FILE = "epoch_{:04d}.pt"
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")


def epoch_checkpoints(folder: str | Path) -> list[Path]:
    """The ``epoch_NNNN.pt`` files of ``folder``, oldest epoch first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _EPOCH_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def resume_candidates(folder: str | Path) -> list[Path]:
    """Where ``--resume auto`` looks, newest state first: ``last.pt``, ``last.pt.prev``, the epoch copies."""
    last = Path(folder) / LAST
    return [p for p in (last, previous_path(last), *reversed(epoch_checkpoints(folder))) if p.is_file()]


def load_resume_state(resume: str | Path, folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a run resumes from and its state; ``None`` to start afresh.

    ``resume`` is a checkpoint path, or ``"auto"``: the newest readable checkpoint of the run folder
    ``folder`` (:func:`resume_candidates`), ``None`` when it has none, so that the same command starts a run and
    continues it after a restart (``torchrun --max-restarts``). A damaged candidate is skipped with a warning;
    ``ValueError`` when checkpoints exist but none can be read.
    """
    if str(resume) != AUTO:
        return Path(resume), load_checkpoint(resume)
    candidates = resume_candidates(folder)
    if not candidates:
        log.info("--resume auto: no checkpoint in %s, starting a new run", folder)
        return None
    errors = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except ValueError as e:
            log.warning("--resume auto: skipping %s (%s)", path, e)
            errors.append(str(e))
            continue
        log.info("--resume auto: continuing from %s", path)
        return path, state
    raise ValueError(f"--resume auto: no readable checkpoint in {folder}: {'; '.join(errors)}")


def keep_epoch_checkpoint(last: Path, epoch: int, keep: int) -> Path | None:
    """Keep the epoch-end checkpoint ``last`` as ``epoch_NNNN.pt`` beside it and remove the epoch copies beyond
    the newest ``keep`` (``-1``: keep all; ``0``: keep none, nothing is written). Returns the copy."""
    if keep == 0:
        return None
    target = link_or_copy(last, last.with_name(EPOCH_FILE.format(epoch)))
    if keep > 0:
        for old in epoch_checkpoints(last.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return target


def resume_hint(folder: str | Path, config: str | Path, overrides: Sequence[str] = (),
                env: Mapping[str, str] | None = None) -> str:
    """What an interrupted run left in ``folder`` and the ``dspose train`` command (``config`` with its
    ``--set`` ``overrides``) that continues it; under ``torchrun`` (``WORLD_SIZE`` > 1 in ``env``) the same
    torchrun command with ``--resume``."""
    env = os.environ if env is None else env
    last = Path(folder) / LAST
    if not last.is_file():
        return f"no checkpoint was written yet in {folder}; run the same command again to start over"
    argv = ["dspose", "train", str(config), "--resume", str(last)]
    for item in overrides:
        argv += ["--set", item]
    distributed = int(env.get("WORLD_SIZE", "1")) > 1
    torchrun = " (under torchrun: the same torchrun command with --resume)" if distributed else ""
    return f"the last good checkpoint is {last}; resume with: {shlex.join(argv)}{torchrun}"
