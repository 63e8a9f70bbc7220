"""Generic file I/O for every package: atomic writes, JSON reading, provenance records, the raw-data folder,
output-path checks and the run-folder lock.

Shared by every writer in the project (topology files, checkpoints, result tables) so that no
output is ever left half-written and every derived artifact says where it came from.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import hashlib
import json
import logging
import os
import platform
import socket
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

DATA_ENV = "DSPOSE_DATA"
LOCK_NAME = ".dspose.lock"
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


class FolderLockedError(FileExistsError):
    """Another live run holds the lock of an output folder."""


class FolderLock:
    """An exclusive lock on an output folder: ``<folder>/.dspose.lock`` holding ``pid host``.

    Two runs writing one folder would interleave checkpoints and logs; the second is refused with a
    :class:`FolderLockedError` naming the folder and the holder's pid. A lock left by a process that no
    longer exists on this host (killed with -9) is taken over with a warning. Use as a context manager or
    call :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, folder: str | Path, option: str = "output folder") -> None:
        self.folder = Path(folder)
        self.option = option
        self.path = self.folder / LOCK_NAME
        self.held = False
        self.created: list[Path] = []

    def acquire(self) -> "FolderLock":
        check_output_dir(self.folder, self.option)
        # The folders made here are removed again on release when the run wrote nothing into them (it stopped
        # on a bad input), so a failed run leaves no empty folder behind.
        self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        # The lock is written complete beside its place and hard-linked there (an atomic create-if-absent),
        # so another run never reads a half-written lock.
        fd, name = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".tmp", dir=self.folder)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            for _ in range(2):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                self.held = True
                return self
        finally:
            tmp.unlink(missing_ok=True)
        raise FolderLockedError(f"{self.folder} is locked by another run ({self._holder()}); could not take the lock")

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "empty lock file"
        except OSError:
            return "lock file vanished"

    def _take_over_if_stale(self) -> None:
        holder = self._holder()
        parts = holder.split()
        pid = int(parts[0]) if parts and parts[0].isdigit() else None
        host = parts[1] if len(parts) > 1 else socket.gethostname()
        if pid is not None and (host != socket.gethostname() or _pid_alive(pid)):
            where = "" if host == socket.gethostname() else f" on host {host}"
            raise FolderLockedError(
                f"{self.folder} is in use by another run (pid {pid}{where}, lock file {self.path}); wait for it "
                f"to end or choose another output folder (delete the lock file only if that run is gone)")
        log.warning("%s: taking over the lock left by a run that no longer exists (%s)", self.folder, holder)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held and self._holder().split()[:1] == [str(os.getpid())]:
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
