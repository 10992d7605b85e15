"""Ctrl-C and SIGTERM: an install is never left half-done, SIGTERM cleans up like Ctrl-C (exit 143), a folder whose
install was killed hard is refused with the fix, and a renamed exported file is named back."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_export, one_line_error


def _signal_on_first_rename(monkeypatch, dest: Path, signum: int) -> list:
    """Make ``fsutil.install_staged`` send this process ``signum`` right after its first rename into ``dest``
    (the record is in place, the other files are not yet); returns the renames seen."""
    from edgeseg import fsutil

    real, renames = os.replace, []

    def replace(src, dst):
        real(src, dst)
        if Path(dst).parent == dest and Path(dst).name != fsutil.INSTALLING:
            renames.append(Path(dst).name)
            if len(renames) == 1:
                os.kill(os.getpid(), signum)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    return renames


class _CliTerminated(KeyboardInterrupt):
    """What the CLI's SIGTERM handler raises (stands in for it here: a handler set from Python that raises)."""

    signum = signal.SIGTERM


def _raise_cli_terminated(signum, frame):
    raise _CliTerminated()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_an_install_is_held_until_every_file_is_in_place(tmp_path, monkeypatch, signum):
    """Ctrl-C landing between two renames left the old manifest beside the new files and the record: bench then
    blamed the user for 'changed' files. The install finishes first, then the interrupt is raised, saying so."""
    from edgeseg import fsutil

    dest = tmp_path / "exp"
    dest.mkdir()
    for name, data in {"m-fp32.onnx": b"old model", "parity-reference.npz": b"old ref", "gone.onnx": b"old int8",
                       "manifest.json": b"old manifest", "yours.txt": b"the user's"}.items():
        (dest / name).write_bytes(data)
    stage = fsutil.staging_dir(dest)
    new = {"m-fp32.onnx": b"new model", "parity-reference.npz": b"new ref", "manifest.json": b"new manifest"}
    for name, data in new.items():
        (stage / name).write_bytes(data)
    (stage / "m.mlpackage").mkdir()
    (stage / "m.mlpackage" / "w.bin").write_bytes(b"weights")
    renames = _signal_on_first_rename(monkeypatch, dest, signum)
    handler = signal.signal(signal.SIGTERM, _raise_cli_terminated) if signum == signal.SIGTERM else None
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            fsutil.install_staged(stage, dest, owned={"m-fp32.onnx", "parity-reference.npz", "gone.onnx", "manifest.json"},
                                  last="manifest.json")
        assert signal.getsignal(signum) is (signal.default_int_handler if signum == signal.SIGINT else _raise_cli_terminated)
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    # the signal came right after the first rename, and every other one still followed
    assert renames == ["m-fp32.onnx", "m.mlpackage", "parity-reference.npz", "manifest.json"]
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == {**new, "yours.txt": b"the user's"}
    assert (dest / "m.mlpackage" / "w.bin").read_bytes() == b"weights"  # and no record, no staging folder, gone.onnx gone
    assert sorted(p.name for p in dest.iterdir()) == ["m-fp32.onnx", "m.mlpackage", "manifest.json", "parity-reference.npz",
                                                      "yours.txt"]
    assert isinstance(caught.value, fsutil.InstallInterrupted) and caught.value.signum == signum
    verb = "interrupted" if signum == signal.SIGINT else "terminated"
    assert str(caught.value) == f"{verb} after {dest} was written (it is complete)"


# runs ``edgeseg ARGS`` with this process sending itself a signal right after the first rename into OUT
_SIGNAL_ON_INSTALL = """
import os, sys
from pathlib import Path
from edgeseg import fsutil
from edgeseg.cli import main
out, signum = Path(sys.argv[1]), int(sys.argv[2])
real, sent = os.replace, []
def replace(src, dst):
    real(src, dst)
    if Path(dst).parent == out and Path(dst).name != fsutil.INSTALLING and not sent:
        sent.append(dst)
        os.kill(os.getpid(), signum)
fsutil.os.replace = replace
main(args=sys.argv[3:], prog_name="edgeseg")
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_cli_says_the_output_is_complete_when_the_signal_came_during_its_install(tmp_path, cli, signum):
    """A real ``edgeseg data synth`` process re-writing a data set, signalled between the renames of its install."""
    from edgeseg import fsutil

    out = tmp_path / "ds"
    assert cli("data", "synth", out, "--count", "2", "--size", "32").exit_code == 0
    r = subprocess.run([sys.executable, "-c", _SIGNAL_ON_INSTALL, str(out), str(int(signum)), "data", "synth", str(out),
                        "--count", "3", "--size", "32"], capture_output=True, text=True, timeout=300)
    verb = "interrupted" if signum == signal.SIGINT else "terminated"
    assert r.returncode == 128 + signum, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"{verb} after {out} was written (it is complete)"
    assert [len(list((out / d).iterdir())) for d in ("images", "masks")] == [3, 3]
    assert not (out / fsutil.INSTALLING).exists() and not [p for p in out.iterdir() if fsutil.is_staging(p)]
    assert cli("data", "synth", out, "--count", "3", "--size", "32").exit_code == 0  # the next run knows it as its own


def _killed_install(monkeypatch, staging: Path, dest: Path, after: str) -> None:
    """``install_staged`` whose process dies (kill -9, power loss: no cleanup runs) right after renaming ``after``."""
    from edgeseg import fsutil

    class Killed(BaseException):
        pass

    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if Path(dst) == dest / after:
            raise Killed

    monkeypatch.setattr(fsutil.os, "replace", replace)
    with pytest.raises(Killed):
        fsutil.install_staged(staging, dest, owned={"manifest.json", "parity-reference.npz"}, last="manifest.json")
    monkeypatch.setattr(fsutil.os, "replace", real)


def _restage(dest: Path, manifest_note: str) -> Path:
    """A re-export's staging folder for ``dest``: a new parity reference and a new manifest listing it."""
    from edgeseg import fsutil

    stage = fsutil.staging_dir(dest)
    shutil.copy2(dest / "tiny-fp32.onnx", stage / "tiny-fp32.onnx")
    (stage / "parity-reference.npz").write_bytes((dest / "parity-reference.npz").read_bytes() + b"newer")
    raw = json.loads((dest / "manifest.json").read_text())
    raw["parity_reference"]["sha256"] = fsutil.sha256_file(stage / "parity-reference.npz")
    raw["tools"]["note"] = manifest_note
    (stage / "manifest.json").write_text(json.dumps(raw))
    return stage


def test_a_folder_whose_install_was_killed_is_refused_with_the_fix_until_it_is_re_exported(shared_export, tmp_path, cli,
                                                                                          monkeypatch):
    """kill -9 between the renames left the old manifest, the new reference and the record: bench blamed the user
    ('sha256 ... does not match ... changed or replaced after export') and predict ran on the mixed folder."""
    from PIL import Image

    from edgeseg.errors import ArtifactError
    from edgeseg.export.pipeline import owned_by_earlier_export
    from edgeseg.fsutil import INSTALLING
    from edgeseg.manifest import read_manifest

    exp = copy_export(shared_export.dir, tmp_path / "ins", keep={("onnx", "fp32")})
    Image.new("RGB", (40, 30), (90, 120, 200)).save(tmp_path / "photo.png")
    _killed_install(monkeypatch, _restage(exp, "a"), exp, after="parity-reference.npz")
    assert (exp / INSTALLING).is_file()
    r = cli("predict", exp, tmp_path / "photo.png", "--out", tmp_path / "p")
    assert r.exit_code == 2, r.output
    line = one_line_error(r.stderr)
    assert f"{exp}: an edgeseg run was stopped while installing files here ({INSTALLING} is left" in line
    assert line.endswith("re-run the export into it") and not (tmp_path / "p").exists()
    with pytest.raises(ArtifactError, match="stopped while installing"):
        read_manifest(exp)
    # the fix works: the exporter reads the earlier manifest on its own and owns what the killed run put there
    assert {"manifest.json", "parity-reference.npz", "tiny-fp32.onnx"} <= owned_by_earlier_export(
        exp, {"manifest.json", "parity-reference.npz", "tiny-fp32.onnx"}, force=False)

    # killed after its manifest was in place (only the record's removal was left): complete, and read as it is
    _killed_install(monkeypatch, _restage(exp, "b"), exp, after="manifest.json")
    assert (exp / INSTALLING).is_file()
    manifest = read_manifest(exp)
    assert manifest.tools["note"] == "b" and manifest.reference_file().is_file()
    assert cli("predict", exp, tmp_path / "photo.png", "--out", tmp_path / "p").exit_code == 0


def test_a_renamed_exported_file_is_named_back(shared_export, tmp_path, cli):
    """'ren/segmenter.onnx: not listed in ren/manifest.json', and nothing more: no fix."""
    from PIL import Image

    ren = copy_export(shared_export.dir, tmp_path / "ren", keep={("onnx", "fp32"), ("onnx", "int8")})
    Image.new("RGB", (40, 30), (90, 120, 200)).save(tmp_path / "photo.png")
    (ren / "tiny-int8.onnx").rename(ren / "segmenter.onnx")

    def refused(path: Path) -> str:
        r = cli("predict", path, tmp_path / "photo.png", "--out", tmp_path / "p")
        assert r.exit_code == 2, r.output
        return one_line_error(r.stderr)

    assert refused(ren / "segmenter.onnx") == (
        f"error: {ren / 'segmenter.onnx'}: not listed in {ren / 'manifest.json'}; it holds the bytes of 'tiny-int8.onnx': "
        "rename it back to tiny-int8.onnx (the manifest, parity reference and bench find files by their exported names)")
    shutil.copy2(ren / "tiny-fp32.onnx", ren / "copy.onnx")
    line = refused(ren / "copy.onnx")
    assert "it holds the bytes of 'tiny-fp32.onnx', which is there: give" in line and str(ren / "tiny-fp32.onnx") in line
    (ren / "other.onnx").write_bytes(b"not an export")
    assert refused(ren / "other.onnx").endswith(f"not listed in {ren / 'manifest.json'}; give a file listed there, "
                                                f"or the export folder {ren}")
    assert not (tmp_path / "p").exists()


def test_read_manifest_tells_a_stopped_install_from_one_under_way_and_ignores_other_installs(tmp_path):
    """Which unfinished install ``read_manifest`` refuses, before it reads the manifest's contents."""
    from edgeseg.errors import ArtifactError
    from edgeseg.fsutil import INSTALLING
    from edgeseg.manifest import read_manifest

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "manifest.json").write_text("{}")
    other = {"manifest.json": "0" * 64}
    for record, needle in [({"files": other, "pid": os.getppid()}, "an edgeseg run is installing files here now"),
                           ({"files": other, "pid": os.getpid()}, "an edgeseg run was stopped while installing"),
                           ({"files": other, "pid": dead.pid}, "an edgeseg run was stopped while installing files here"),
                           ("not json", "an edgeseg run was stopped while installing files here"),
                           ({"files": {"report.md": "0" * 64}, "pid": dead.pid}, "not a valid edgeseg manifest")]:
        (tmp_path / INSTALLING).write_text(record if isinstance(record, str) else json.dumps(record))
        with pytest.raises(ArtifactError, match=needle):
            read_manifest(tmp_path)
