"""Integrity of export directories: every file is checked against manifest.json before it is used.

The tiny model's ONNX fp32 + int8 files (from the session's shared export) are copied into each
test's tmp_path before they are tampered with. Every consumer (predict, eval, bench, inspect) refuses, exit 2 with one line
naming the file and the fix, a file whose sha256 does not match (the fp32 file replaced by the
int8 one runs silently otherwise) and a path that leaves the directory (``..``, absolute, or a
symlink out), and writes nothing.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgeseg.errors import ArtifactError
from edgeseg.manifest import MANIFEST_NAME, check_relative, file_digest, read_manifest

from conftest import assert_refused, copy_export, invoke_cli


@pytest.fixture
def export_copy(shared_export, tmp_path) -> Path:
    """This test's own ONNX fp32 + int8 export of the tiny checkpoint (copied from the session's export)."""
    return copy_export(shared_export.dir, tmp_path / "exp", keep=[("onnx", "fp32"), ("onnx", "int8")])


def edit_manifest(export_dir: Path, **paths: str) -> None:
    """Set the ``path`` of the artifacts named by precision (``fp32="../x.onnx"``) in manifest.json."""
    raw = json.loads((export_dir / MANIFEST_NAME).read_text())
    for a in raw["artifacts"]:
        a["path"] = paths.get(a["precision"], a["path"])
    (export_dir / MANIFEST_NAME).write_text(json.dumps(raw, indent=2))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two 64x64 input images for predict."""
    root = tmp_path_factory.mktemp("integrity_images")
    r = invoke_cli("data", "synth", root, "--count", "2", "--size", "64")
    assert r.exit_code == 0, r.output
    return root / "images"


@pytest.fixture
def out(tmp_path) -> Path:
    """Where consumers would write (missing until one does)."""
    return tmp_path / "out"


def consumers(export_dir: Path, file: Path, out: Path, images: Path) -> dict[str, tuple]:
    """The same export read by every command that opens exported files; they write under ``out`` only."""
    return {"predict": ("predict", export_dir, images, "--out", out / "pred", "--artifact", "onnx:fp32"),
            "eval": ("eval", export_dir, "--count", "2", "--json", out / "eval.json"),
            "eval-file": ("eval", file, "--count", "2", "--json", out / "eval.json"),
            "bench": ("bench", export_dir, "--threads", "1", "--runs", "3", "--sessions", "1", "--warmup", "0",
                      "--json", out / "bench.json", "--report", out / "report"),
            "inspect": ("inspect", file, "--json")}


COMMANDS = ["predict", "eval", "eval-file", "bench", "inspect"]


# ---------------------------------------------------------------------------------------------
# Bytes that do not match the manifest


def test_untouched_copy_is_accepted(cli, export_copy, out, images):
    """Control: the copied export itself passes the check, so the refusals below are about the tampering."""
    res = cli(*consumers(export_copy, export_copy / "tiny-fp32.onnx", out, images)["eval"])
    assert res.exit_code == 0, res.output
    info = json.loads(cli("inspect", export_copy / "tiny-fp32.onnx", "--json").stdout)
    assert info["manifest"]["precision"] == "fp32"


@pytest.mark.parametrize("command", COMMANDS)
def test_swapped_files_are_refused(cli, export_copy, out, images, command):
    """The fp32 and int8 files swapped: each is a valid model, but not the one the manifest describes."""
    fp32, int8 = export_copy / "tiny-fp32.onnx", export_copy / "tiny-int8.onnx"
    tmp = fp32.with_suffix(".tmp")
    fp32.rename(tmp)
    int8.rename(fp32)
    tmp.rename(int8)
    line = assert_refused(cli, *consumers(export_copy, fp32, out, images)[command], watch=[export_copy, out],
                          match=f"{fp32}: sha256")
    assert "does not match" in line and "re-export" in line


def test_inspect_no_longer_reports_the_wrong_precision(cli, export_copy):
    """The fp32 file overwritten with the int8 bytes: inspect used to call it fp32."""
    shutil.copy(export_copy / "tiny-int8.onnx", export_copy / "tiny-fp32.onnx")
    assert_refused(cli, "inspect", export_copy / "tiny-fp32.onnx", watch=[export_copy], match="does not match")
    # the int8 file itself is still described, with its own precision
    info = json.loads(cli("inspect", export_copy / "tiny-int8.onnx", "--json").stdout)
    assert info["manifest"]["precision"] == "int8"


def test_missing_file_names_the_file(cli, export_copy, out, images):
    (export_copy / "tiny-fp32.onnx").unlink()
    assert_refused(cli, *consumers(export_copy, export_copy / "tiny-fp32.onnx", out, images)["eval"], watch=[export_copy, out],
                   match=f"{export_copy / 'tiny-fp32.onnx'}: listed in")


def test_a_folder_with_one_of_the_files_names_the_pick_that_opens_it(cli, export_copy, out, images):
    """The README says to copy an exported file with its manifest: such a folder was refused with 're-export'
    only, though --artifact naming the file that is there opens it."""
    (export_copy / "tiny-fp32.onnx").unlink()
    line = assert_refused(cli, *consumers(export_copy, export_copy / "tiny-fp32.onnx", out, images)["eval"],
                          watch=[export_copy, out], match="open a file that is there: --artifact onnx:int8")
    assert "listed in" in line
    r = cli("eval", export_copy, "--artifact", "onnx:int8", "--count", "2")
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------------------------------------
# Paths that leave the export directory


@pytest.mark.parametrize("command", ["predict", "eval", "bench"])
@pytest.mark.parametrize("path", ["../outside/tiny-fp32.onnx", "ABSOLUTE"])
def test_path_out_of_the_directory_is_refused(cli, export_copy, out, images, command, path):
    """A real model waits at the target: without the check it would be opened and run."""
    outside = export_copy.parent / "outside"
    outside.mkdir()
    shutil.copy(export_copy / "tiny-fp32.onnx", outside / "tiny-fp32.onnx")
    path = str(outside / "tiny-fp32.onnx") if path == "ABSOLUTE" else path
    edit_manifest(export_copy, fp32=path)
    line = assert_refused(cli, *consumers(export_copy, export_copy / "tiny-int8.onnx", out, images)[command],
                          watch=[export_copy, outside, out], match=f"artifact path {path!r} leaves the export directory")
    assert str(export_copy / MANIFEST_NAME) in line


@pytest.mark.parametrize("command", COMMANDS)
def test_symlink_out_of_the_directory_is_refused(cli, export_copy, out, images, command):
    """The listed file is a symlink to the same bytes elsewhere: its sha256 matches, its place does not."""
    outside = export_copy.parent / "outside.onnx"
    (export_copy / "tiny-fp32.onnx").rename(outside)
    (export_copy / "tiny-fp32.onnx").symlink_to(outside)
    assert_refused(cli, *consumers(export_copy, export_copy / "tiny-fp32.onnx", out, images)[command], watch=[export_copy, out],
                   match=f"resolves to {outside}, outside the export directory")


def test_symlink_inside_the_directory_is_accepted(export_copy):
    (export_copy / "tiny-fp32.onnx").rename(export_copy / "real.onnx")
    (export_copy / "tiny-fp32.onnx").symlink_to("real.onnx")
    art = read_manifest(export_copy).find("onnx", "fp32")
    assert art.verified_file() == export_copy / "tiny-fp32.onnx"


@pytest.mark.parametrize("bad", ["../x.onnx", "a/../../x.onnx", "/etc/passwd", "C:\\x.onnx", "..\\x.onnx", "", ".",
                                 None, 3])
def test_check_relative_refuses_paths_that_leave(bad):
    with pytest.raises(ArtifactError, match="leaves the export directory"):
        check_relative(bad, Path("exp/manifest.json"))


@pytest.mark.parametrize("good", ["tiny-fp32.onnx", "sub/tiny.onnx", "./tiny.onnx", "..tiny.onnx"])
def test_check_relative_accepts_plain_relative_paths(good):
    assert check_relative(good, Path("exp/manifest.json")) == good


# ---------------------------------------------------------------------------------------------
# A manifest whose sha256 values still match but whose model section is malformed


def edit_model(export_dir: Path, change) -> None:
    raw = json.loads((export_dir / MANIFEST_NAME).read_text())
    change(raw)
    (export_dir / MANIFEST_NAME).write_text(json.dumps(raw, indent=2))


MALFORMED_MODEL = {
    "empty": (lambda m: m.update(model={}), "not a valid edgeseg manifest ('model.name' is missing)"),
    "no-input": (lambda m: m["model"].pop("input"), "'model.input.height' is missing"),
    "height-str": (lambda m: m["model"]["input"].update(height="64"), "'model.input.height' is '64'"),
    "std-0": (lambda m: m["model"].update(std=[0, 0, 0]), "'model.std' is [0, 0, 0]; it must be three finite numbers > 0"),
    "mean-2": (lambda m: m["model"].update(mean=[1, 2]), "'model.mean' is [1, 2]"),
    "classes-str": (lambda m: m["model"].update(classes="person"), "'model.classes' is 'person'"),
    # runners feed the model's size: a 128x128 manifest for 64x64 files was an ONNX Runtime InvalidArgument
    "size": (lambda m: m["model"].update(input={"height": 128, "width": 128}),
             "artifact 'tiny-fp32.onnx': input shape [1, 3, 64, 64] (NCHW) is 64x64 (height x width) but model.input is 128x128"),
    "layout": (lambda m: m["artifacts"][0]["input"].update(layout="NHWC"),
               "input shape [1, 3, 64, 64] (NHWC) is 3x64 (height x width) but model.input is 64x64"),
    "shape-3d": (lambda m: m["artifacts"][0]["input"].update(shape=[3, 64, 64]), "input shape [3, 64, 64] is not a list of 4"),
}


@pytest.mark.parametrize("command", ["predict", "eval", "eval-file", "bench"])
@pytest.mark.parametrize("case", list(MALFORMED_MODEL))
def test_malformed_model_section_is_refused_on_read(cli, export_copy, out, images, command, case):
    change, match = MALFORMED_MODEL[case]
    edit_model(export_copy, change)
    line = assert_refused(cli, *consumers(export_copy, export_copy / "tiny-fp32.onnx", out, images)[command],
                          watch=[export_copy, out], match=match)
    assert line.startswith(f"error: {export_copy / MANIFEST_NAME}: ") and line.endswith("re-export, or fix the manifest")


def test_manifest_input_shape_agrees_per_layout(export_copy):
    """NHWC puts height and width at positions 1-2, NCHW at 2-3: both read back when they agree."""
    edit_model(export_copy, lambda m: m["artifacts"][1]["input"].update(layout="NHWC", shape=[1, 64, 64, 3]))
    assert [a.input["layout"] for a in read_manifest(export_copy).artifacts] == ["NCHW", "NHWC"]


# ---------------------------------------------------------------------------------------------
# Hashing cost


def test_each_file_is_hashed_once_until_it_changes(export_copy, monkeypatch):
    """bench loads a file once per (thread count x session): the hash is computed once, and again
    only after the file changes (a replacement with the same size is caught too)."""
    from edgeseg.runtime.loader import runner_for_artifact

    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    manifest = read_manifest(export_copy)
    art = manifest.find("onnx", "fp32")
    for _ in range(3):
        runner_for_artifact(art, manifest, 1).close()
    assert reads.count("tiny-fp32.onnx") == 1

    data = bytearray(real(art.file))
    data[-1] ^= 1  # same size, different bytes
    art.file.write_bytes(bytes(data))
    os.utime(art.file, ns=(0, 0))  # even with an old mtime: the inode's ctime changed
    with pytest.raises(ArtifactError, match="does not match"):
        art.verified_file()
    assert file_digest(art.file)[1] != art.sha256


# ---------------------------------------------------------------------------------------------
# The stored parity reference is listed like every file: a path out of the directory is refused on read


@pytest.mark.parametrize("command", ["predict", "eval", "eval-file", "bench"])  # inspect describes the file alone
def test_parity_reference_path_out_of_the_directory_is_refused(cli, export_copy, out, images, command):
    outside = export_copy.parent / "parity-reference.npz"
    shutil.copy(export_copy / "parity-reference.npz", outside)  # same bytes, same sha256: only the place is wrong
    edit_model(export_copy, lambda m: m["parity_reference"].update(path="../parity-reference.npz"))
    line = assert_refused(cli, *consumers(export_copy, export_copy / "tiny-fp32.onnx", out, images)[command],
                          watch=[export_copy, out], match="'parity_reference' path '../parity-reference.npz' leaves the "
                                                          "export directory; re-export, or fix the manifest")
    assert line.startswith(f"error: {export_copy / MANIFEST_NAME}: ")
