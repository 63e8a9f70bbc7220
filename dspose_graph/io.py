"""Generic file I/O for every package: atomic writes, JSON reading, provenance records, the raw-data folder,
output-path checks and the run-folder lock.

Shared by every writer in the project (topology files, checkpoints, result tables) so that no
output is ever left half-written and every derived artifact says where it came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import gzip
import hashlib
import json
import logging
import os
import platform
import socket
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

DATA_ENV = "DSPOSE_DATA"
LOCK_NAME = ".dspose.lock"
LOCK_HEARTBEAT_S = 30.0  # how often a run refreshes its folder lock
LOCK_STALE_S = 300.0  # a lock from another host not refreshed for this long belongs to a run that has stopped
log = logging.getLogger(__name__)


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; outputs should get the mode an ordinary open() would give them.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        e.filename = str(path)  # not the temporary name the user never chose
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _FILE_MODE)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == str(tmp_path):
            e.filename = str(path)  # the user knows their file, not our temporary name (a full disk, say)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file (gzip-compressed when it ends in ``.gz``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that does not parse, both
    naming ``what`` (e.g. ``"annotation file"``) and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; expected a JSON file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"{what} {path}: malformed JSON ({e})") from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_version() -> str:
    try:
        return metadata.version("dspose-graph")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(source: str | Path | None = None, **parameters: Any) -> dict[str, Any]:
    """A provenance record: source file and its sha256, parameters, package version, date."""
    record: dict[str, Any] = {
        "package": "dspose-graph",
        "version": package_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "parameters": parameters,
    }
    if source is not None:
        record["source"] = Path(source).name
        record["source_sha256"] = sha256_file(source)
    return record


def shared_data_dir() -> Path | None:
    """The raw-data folder: ``$DSPOSE_DATA``, else ``../shared/data`` from the working directory or the repo."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    for candidate in (Path.cwd() / ".." / "shared" / "data", repo / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` as an output folder: ``FileExistsError`` naming ``option`` when it (or a parent) is a file.

    Called before any work, so that a command does not run for minutes and then fail to write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{option} {path}: is an existing file; expected a folder (or a new name)")
    if path.is_dir():
        _check_writable(path, path, option)
    else:
        _check_parents(path, option)
    return path


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` as an output file: ``IsADirectoryError`` naming ``option`` when it is a folder, or its parent a file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path}: is an existing folder; expected a file name")
    _check_parents(path, option)
    return path


def _check_parents(path: Path, option: str) -> None:
    """The nearest existing folder above ``path`` must be a folder that accepts new files (probed, not guessed:
    ``/proc`` or a read-only mount refuse even root)."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{option} {path}: {parent} is a file, not a folder")
            _check_writable(parent, path, option)
            return


def _check_writable(folder: Path, path: Path, option: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".dspose-probe.", dir=folder)
    except OSError as e:
        raise OSError(f"{option} {path}: cannot create files in {folder} ({e.strerror or e}); "
                      "choose a writable location") from None
    os.close(fd)
    os.unlink(probe)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``); ``None`` where unknown.

    With the pid it names one process: a pid reused by another process (a new container with the same hostname
    numbers its processes from 1 again) has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


class FolderLockedError(FileExistsError):
    """Another live run holds the lock of an output folder."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """What a lock file says about the run holding it: ``pid host [start=T] [job=ID attempt=N]``."""

    pid: int
    host: str
    start: str | None = None
    job: str | None = None
    attempt: int = 0

    @classmethod
    def this_process(cls) -> "LockHolder":
        # torchrun names its job (the same id across --max-restarts attempts) and counts the attempts.
        job = os.environ.get("TORCHELASTIC_RUN_ID") or None
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return cls(os.getpid(), socket.gethostname(), _process_start(os.getpid()), job,
                   int(attempt) if attempt.isdigit() else 0)

    @classmethod
    def parse(cls, text: str) -> "LockHolder | None":
        parts = text.split()
        if len(parts) < 2 or not parts[0].isdigit():
            return None
        extra = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        attempt = extra.get("attempt", "0")
        return cls(int(parts[0]), parts[1], extra.get("start"), extra.get("job"),
                   int(attempt) if attempt.isdigit() else 0)

    def record(self) -> str:
        fields = [str(self.pid), self.host]
        if self.start is not None:
            fields.append(f"start={self.start}")
        if self.job is not None:
            fields += [f"job={self.job}", f"attempt={self.attempt}"]
        return " ".join(fields) + "\n"

    def alive_here(self) -> bool:
        """Whether this (same-host) holder still runs: its pid exists and, where recorded, started when it did."""
        if self.pid == os.getpid():
            return self.start is not None and self.start == _process_start(self.pid)
        if not _pid_alive(self.pid):
            return False
        return self.start is None or _process_start(self.pid) in (None, self.start)


class FolderLock:
    """An exclusive lock on an output folder: ``<folder>/.dspose.lock`` naming the run that holds it.

    Two runs writing one folder would interleave checkpoints and logs; the second is refused with a
    :class:`FolderLockedError` naming the folder and the holder. The holder refreshes the file's time every
    :data:`LOCK_HEARTBEAT_S` seconds. A lock is taken over, with a warning, when its run is gone: a process that
    no longer exists on this host (killed with -9; a pid reused by another process, e.g. in a new container with
    the same hostname, does not count), an earlier attempt of this same ``torchrun`` job (``--max-restarts``),
    or, on another host (whose processes cannot be checked), a lock not refreshed for :data:`LOCK_STALE_S`
    seconds. Use as a context manager or call :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, folder: str | Path, option: str = "output folder") -> None:
        self.folder = Path(folder)
        self.option = option
        self.path = self.folder / LOCK_NAME
        self.held = False
        self._me = LockHolder.this_process()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.created: list[Path] = []

    def acquire(self) -> "FolderLock":
        check_output_dir(self.folder, self.option)
        # The folders made here are removed again on release when the run wrote nothing into them (it stopped
        # on a bad input), so a failed run leaves no empty folder behind.
        self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._me = LockHolder.this_process()
        for _ in range(2):
            if self._create(self._me.record()):
                self.held = True
                self._start_heartbeat()
                return self
            self._take_over_if_stale()
        raise FolderLockedError(f"{self.folder} is locked by another run ({self._holder()}); could not take the lock")

    def _create(self, record: str) -> bool:
        """Create the lock file holding ``record`` if there is none; ``False`` when one exists.

        The record is written complete beside its place and hard-linked there (an atomic create-if-absent, so
        no run reads a half-written lock); where the file system has no hard links, it is created exclusively
        and then written (a reader may meet it empty for a moment: an empty lock counts as held until stale).
        """
        fd, name = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".tmp", dir=self.folder)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(record)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as e:  # EPERM, EOPNOTSUPP...: no hard links on this file system
                log.debug("%s: no hard links (%s); creating the lock exclusively", self.folder, e)
        finally:
            tmp.unlink(missing_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "empty lock file"
        except OSError:
            return "lock file vanished"

    def _age(self) -> float | None:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return None

    def _take_over_if_stale(self) -> None:
        text = self._holder()
        age = self._age()
        if age is None:
            return  # vanished meanwhile: try again
        holder = LockHolder.parse(text)
        me = self._me
        here = socket.gethostname()
        stale_min = LOCK_STALE_S / 60
        if holder is not None and holder.job is not None and holder.job == me.job and holder.attempt < me.attempt:
            reason = f"attempt {holder.attempt} of this torchrun job ({holder.job}), restarted as attempt {me.attempt}"
        elif holder is not None and holder.host == here:
            if holder.alive_here():
                raise FolderLockedError(
                    f"{self.folder} is in use by another run (pid {holder.pid}, lock file {self.path}); wait for "
                    f"it to end or choose another output folder (delete the lock file only if that run is gone)")
            reason = f"pid {holder.pid} no longer runs here"
        elif age < LOCK_STALE_S:
            who = f"pid {holder.pid} on host {holder.host}" if holder is not None else f"an unreadable lock ({text})"
            raise FolderLockedError(
                f"{self.folder} is in use by another run ({who}, lock file {self.path}, refreshed {age:.0f} s ago); "
                f"wait for it to end or choose another output folder. A lock not refreshed for {stale_min:g} min "
                f"is taken over (delete the lock file only if that run is gone)")
        else:
            reason = f"not refreshed for {age / 60:.1f} min"
        log.warning("%s: taking over the lock left by a run that no longer exists (%s: %s)", self.folder, text, reason)
        self.path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock {self.folder}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            self.refresh()

    def refresh(self) -> None:
        """Mark the lock as alive (its file's time = now), while this run holds it."""
        if self.held and LockHolder.parse(self._holder()) == self._me:
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.held and LockHolder.parse(self._holder()) == self._me:
            self.path.unlink(missing_ok=True)
            for folder in self.created:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    break
        self.held = False
        self.created = []

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
