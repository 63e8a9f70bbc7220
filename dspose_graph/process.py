"""Process-level facilities of a command or a script: logging under ``torchrun``, SIGTERM as Ctrl-C, and the error
record ``torchrun`` shows for a failed process.

They serve every long job (training, prediction on a video, an experiment's rows), not the command line alone, so a
Python script gets the same behaviour as ``dspose``. Nothing here imports torch: the entry point uses them before it
knows which command (and which heavy import) it runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import traceback
from typing import Iterator, Mapping

log = logging.getLogger(__name__)

LOG_RANKS = ("main", "all")


def configure_logging(verbose: bool = False, log_ranks: str = "main", env: Mapping[str, str] | None = None) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``). Under ``torchrun`` (``WORLD_SIZE`` > 1) each line is tagged
    ``[rank R/W]``; with ``log_ranks="main"`` the other ranks log warnings and errors only (one copy of each
    progress line instead of one per GPU), with ``"all"`` every rank logs everything."""
    env = os.environ if env is None else env
    level = logging.DEBUG if verbose else logging.INFO
    fmt = "%(levelname)s %(name)s: %(message)s"
    world = env.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        rank = env.get("RANK", "0")
        fmt = f"%(levelname)s [rank {rank}/{world}] %(name)s: %(message)s"
        if log_ranks == "main" and rank != "0":
            level = logging.WARNING
    logging.basicConfig(level=level, format=fmt)


def is_main_rank(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process reports results: rank 0 under ``torchrun`` (which runs the same command in every
    process and sets ``RANK``), or a single process."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")) == 0


def record_error(error: BaseException, env: Mapping[str, str] | None = None) -> None:
    """Write ``error`` where ``torchrun`` reads a failed process's error (``TORCHELASTIC_ERROR_FILE``, in the JSON of
    torch.distributed.elastic's ``ErrorHandler``), so its failure summary shows the message instead of
    ``error_file: <N/A>``. Nothing happens outside torchrun; a file that cannot be written is logged, not raised
    (the error being recorded matters more)."""
    env = os.environ if env is None else env
    path = env.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": f"{type(error).__name__}: {error}",
                        "extraInfo": {"py_callstack": "".join(traceback.format_exception(error)),
                                      "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError as e:
        log.error("could not write torchrun's error file %s: %s", path, e)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a ``KeyboardInterrupt`` so that everything that cleans up after Ctrl-C
    (atomic writes, the run-folder lock, DataLoader workers) does the same for a scheduler's stop."""


_terminated: list[int] = []  # the SIGTERMs received inside sigterm_as_interrupt


def _on_sigterm(signum: int, frame: object) -> None:
    _terminated.append(signum)
    if len(_terminated) == 1:  # a second SIGTERM during the clean-up does not cut it short
        raise Terminated()


def terminated() -> bool:
    """Whether a SIGTERM arrived inside the current :func:`sigterm_as_interrupt` (an interruption or a failure that
    follows it, such as a DataLoader worker stopped by the same signal, is the scheduler's stop)."""
    return bool(_terminated)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (the previous handler comes back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _terminated.clear()
