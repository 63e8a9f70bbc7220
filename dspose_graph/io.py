"""Generic file I/O for every package: atomic writes, JSON reading, provenance records, the raw-data folder.

Shared by every writer in the project (topology files, checkpoints, result tables) so that no
output is ever left half-written and every derived artifact says where it came from.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

DATA_ENV = "DSPOSE_DATA"


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _FILE_MODE)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
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
