"""Atomic file writes (layer 1): a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeseg.errors import EdgesegError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    On any exception the temporary file or folder is removed and ``dest`` is left as it was.
    Works for files and for folders (e.g. a ``.mlpackage``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    target = tmp / dest.name
    try:
        if is_dir:
            target.mkdir()
        yield target
        if is_dir and dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            os.replace(target, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically and return the path."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (utf-8) to ``dest`` atomically and return the path."""
    return write_bytes_atomic(dest, text.encode("utf-8"))


def check_output(path: str | os.PathLike, *, is_dir: bool, what: str = "output") -> Path:
    """Refuse an output location that cannot be written, before any work starts; creates nothing.

    Refused (EdgesegError naming the path and the fix): a file where a folder is needed or a folder
    where a file is needed, an ancestor that is a file, and a location whose nearest existing folder
    is not writable (permissions or a read-only file system).
    """
    path = Path(path)
    if path.exists():
        if is_dir and not path.is_dir():
            raise EdgesegError(f"{what} {path} is a file, not a folder; choose a folder path")
        if not is_dir and path.is_dir():
            raise EdgesegError(f"{what} {path} is a folder; give a file path")
    parent = path if (is_dir and path.is_dir()) else path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise EdgesegError(f"{what} {path}: {probe} is a file, so no folder can be made there; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EdgesegError(f"{what} {path}: {probe} is not writable (permissions or a read-only file system); "
                           "choose a writable location")
    return path
