"""fsutil: atomic writes leave nothing behind, even after a killed run."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from edgeseg.fsutil import atomic_path, sha256_file, write_text_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_temporary_folder_is_removed_by_a_later_atomic_write_there(tmp_path):
    """atomic_path's temporary folders (.NAME.<random>.tmp) stayed forever after kill -9: nothing could tell
    a dead run's from a live one's. They carry the pid now, and a dead one's goes once it is an hour old (a pid
    says nothing across machines sharing the folder)."""
    dead, young = _dead_pid(), _dead_pid()
    folders = {"dead": tmp_path / f".edgeseg-{dead}-abc123.tmp", "young": tmp_path / f".edgeseg-{young}-ghi789.tmp",
               "live": tmp_path / f".edgeseg-{os.getppid()}-def456.tmp",  # pytest's parent: running
               "users": tmp_path / ".cache.tmp"}
    two_hours_ago = time.time() - 7200
    for name, folder in folders.items():
        folder.mkdir()
        (folder / "report.md").write_text("half")
        if name != "young":
            os.utime(folder, (two_hours_ago, two_hours_ago))
    with atomic_path(tmp_path / "report.md") as tmp:
        assert tmp.parent.name.startswith(f".edgeseg-{os.getpid()}-") and tmp.name == "report.md"
        tmp.write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [folders[k].name for k in ("young", "live", "users")] + ["report.md"])


def test_a_failed_atomic_write_leaves_the_destination_and_no_temporary(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("new")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_sha256_file_is_the_sha256_of_the_bytes(tmp_path):
    data = os.urandom(3 << 20)  # several 1 MB chunks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
