"""``bench --report DIR`` replaces only what an earlier report wrote: the report is assembled in a staging
folder and installed name by name with a ledger of what it wrote; a user's file with a report's name is
refused, and a failed write (a full disk) leaves nothing. Real files written by ``write_report``."""
from __future__ import annotations

import json

import pytest
from conftest import tree_state
from test_report_html import FILES, _doc, _samples

from edgeseg.bench.report import REPORT_LEDGER, write_report
from edgeseg.errors import EdgesegError


def _report(out, samples=True):
    return write_report(_doc(), out, _samples([f[0] for f in FILES]) if samples else None)


@pytest.mark.parametrize("name", ["report.md", "report.html", "samples.png", REPORT_LEDGER])
def test_a_users_file_with_a_report_name_is_refused_and_kept(tmp_path, name):
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / name).write_text("# mine\n")
    (docs / "notes.txt").write_text("mine too\n")
    before = tree_state(tmp_path)
    with pytest.raises(EdgesegError, match=f"holds {name}, not written by edgeseg bench") as err:
        _report(docs)
    assert "\n" not in str(err.value) and "--report" in str(err.value)
    assert tree_state(tmp_path) == before


def test_a_rerun_replaces_its_own_report_drops_stale_files_and_keeps_the_users(tmp_path):
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "notes.txt").write_text("mine\n")
    _report(rep)
    ledger = json.loads((rep / REPORT_LEDGER).read_text())["files"]
    assert set(ledger) == {"report.md", "report.html", "latency_accuracy.png", "thread_scaling.png", "samples.png"}
    _report(rep, samples=False)  # this run has no mask strip: the earlier one's is removed, not left stale
    assert sorted(p.name for p in rep.iterdir()) == sorted([REPORT_LEDGER, "notes.txt", "report.md", "report.html",
                                                            "latency_accuracy.png", "thread_scaling.png"])
    assert (rep / "notes.txt").read_text() == "mine\n" and "samples.png" not in (rep / "report.md").read_text()
    # a report file the user edited since is theirs now
    (rep / "report.md").write_text((rep / "report.md").read_text() + "my notes\n")
    with pytest.raises(EdgesegError, match="holds report.md, not written by edgeseg bench"):
        _report(rep)


def test_a_report_written_before_the_ledger_is_still_replaced(tmp_path):
    rep = tmp_path / "rep"
    _report(rep)
    (rep / REPORT_LEDGER).unlink()  # as an earlier version left it
    _report(rep)
    assert (rep / REPORT_LEDGER).is_file()


def test_a_full_disk_leaves_nothing_of_the_report(tmp_path, small_disk):
    (small_disk / "filler").write_bytes(b"\0" * 270_000)  # about 30 KB left: not enough for the charts
    before = tree_state(small_disk)
    with pytest.raises(OSError, match="No space left"):
        _report(small_disk / "rep")
    assert tree_state(small_disk) == before
    (small_disk / "rep").mkdir()  # into an existing folder too
    before = tree_state(small_disk)
    with pytest.raises(OSError, match="No space left"):
        _report(small_disk / "rep")
    assert tree_state(small_disk) == before
