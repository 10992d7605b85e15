"""fsutil: atomic writes leave nothing behind, even after a killed run."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

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


class _Killed(BaseException):
    """The process dying (kill -9, power loss) part-way through an install."""


def _install_killed_after_first_rename(monkeypatch, staging: Path, dest: Path, **kwargs) -> None:
    """``install_staged`` whose process dies after its first rename into ``dest`` (the record is in place)."""
    import os

    from edgeseg import fsutil

    real, renames = os.replace, []

    def replace(src, dst):
        real(src, dst)
        if Path(dst).parent == dest and Path(dst).name != fsutil.INSTALLING and not Path(dst).name.startswith(".edgeseg-"):
            renames.append(dst)
            raise _Killed

    monkeypatch.setattr(fsutil.os, "replace", replace)
    with pytest.raises(_Killed):
        fsutil.install_staged(staging, dest, **kwargs)
    monkeypatch.setattr(fsutil.os, "replace", real)
    assert len(renames) == 1


def test_what_a_killed_install_put_in_place_is_known_as_edgeseg_s_and_a_finished_one_leaves_no_record(tmp_path,
                                                                                                       monkeypatch):
    from edgeseg.fsutil import INSTALLING, being_installed, install_staged, is_staging, staging_dir

    dest = tmp_path / "exp"
    dest.mkdir()
    (dest / "a.bin").write_bytes(b"old a")
    (dest / "yours.txt").write_text("the user's")
    stage = staging_dir(dest)
    (stage / "a.bin").write_bytes(b"new a")
    (stage / "pkg").mkdir()
    (stage / "pkg" / "w.bin").write_bytes(b"weights")
    (stage / "z.json").write_text("{}")
    _install_killed_after_first_rename(monkeypatch, stage, dest, last="z.json")
    assert (dest / "a.bin").read_bytes() == b"new a" and is_staging(dest / INSTALLING)
    assert being_installed(dest, "a.bin") and not being_installed(dest, "yours.txt")
    (dest / "a.bin").write_bytes(b"edited after the crash")  # then it is the user's again
    assert not being_installed(dest, "a.bin")
    stage = staging_dir(dest)
    (stage / "pkg").mkdir()
    (stage / "pkg" / "w.bin").write_bytes(b"weights")
    install_staged(stage, dest)
    assert being_installed(dest, "pkg") is False and not (dest / INSTALLING).exists()


def test_an_export_killed_while_installing_is_replaced_by_the_next_export_and_so_is_a_report(tmp_path, monkeypatch):
    """The files renamed into place before the kill no longer matched the earlier manifest (or report ledger),
    which is installed last: the next export refused them as 'changed since', the next report as not its own."""
    import json

    from edgeseg.bench.report import REPORT_LEDGER, REPORT_TOOL, report_owned
    from edgeseg.export.pipeline import owned_by_earlier_export
    from edgeseg.fsutil import staging_dir

    dest = tmp_path / "exp"
    dest.mkdir()
    (dest / "m-fp32.onnx").write_bytes(b"old model")
    (dest / "manifest.json").write_text(json.dumps({"schema_version": 1, "model": {}, "artifacts": [
        {"path": "m-fp32.onnx", "sha256": sha256_file(dest / "m-fp32.onnx")}]}))
    stage = staging_dir(dest)
    (stage / "m-fp32.onnx").write_bytes(b"new model")
    (stage / "manifest.json").write_text("{}")
    (stage / "m-int8.onnx").write_bytes(b"an added precision")
    _install_killed_after_first_rename(monkeypatch, stage, dest, last="manifest.json")
    assert "m-fp32.onnx" in owned_by_earlier_export(dest, {"m-fp32.onnx", "m-int8.onnx", "manifest.json"}, force=False)
    stage = staging_dir(dest)  # killed again, now after the file no manifest lists yet (renamed after m-fp32)
    (stage / "m-int8.onnx").write_bytes(b"an added precision")
    (stage / "manifest.json").write_text("{}")
    _install_killed_after_first_rename(monkeypatch, stage, dest, last="manifest.json")
    assert "m-int8.onnx" in owned_by_earlier_export(dest, {"m-fp32.onnx", "m-int8.onnx", "manifest.json"}, force=False)

    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("old")
    (report / REPORT_LEDGER).write_text(json.dumps({"tool": REPORT_TOOL, "files": {
        "report.md": sha256_file(report / "report.md")}}))
    stage = staging_dir(report)
    (stage / "report.md").write_text("new")
    (stage / REPORT_LEDGER).write_text("{}")
    _install_killed_after_first_rename(monkeypatch, stage, report, last=REPORT_LEDGER)
    assert "report.md" in report_owned(report)
