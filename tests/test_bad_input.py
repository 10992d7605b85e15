"""Bad input files, each refused with one line naming the file, the problem and the fix (exit 2).

Checkpoints (misfit weights, a newer format, folders, random bytes, a pickle that references
code, a model name that would write outside --out, malformed fields), recipes (binary files,
names that are not plain file names), a resumed run whose recipe changed, a file given as a
calibration folder, an empty .tflite, .mlpackage paths that are not packages, output paths the
file system cannot hold (names over 255 bytes, dangling symlinks) and a full disk. Every case runs
the real CLI and checks that nothing was written (``assert_refused``).
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import torch
from PIL import Image
from click.testing import CliRunner

from edgeseg.manifest import Artifact, Manifest, file_digest

from conftest import assert_refused, one_line_error, run_edgeseg, write_recipe


def edited_checkpoint(src: Path, dest: Path, **changes) -> Path:
    """A copy of the edgeseg checkpoint ``src`` with top-level fields replaced (``info`` merged)."""
    payload = torch.load(src, map_location="cpu", weights_only=True)
    if "info" in changes:
        changes["info"] = {**payload["info"], **changes["info"]}
    torch.save({**payload, **changes}, dest)
    return dest


class RunsCode:
    """Pickles as a call to os.system: a weights-only load must refuse it, never run it."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_weights_that_do_not_fit_the_declared_model_name_the_keys(cli, tiny_checkpoint, tmp_path):
    bad = edited_checkpoint(tiny_checkpoint, tmp_path / "three.pt", info={"classes": ["a", "b", "c"]})
    line = assert_refused(cli, "eval", bad, "--count", "2", watch=[tmp_path], match=f"{bad}: weights do not fit")
    assert "3 classes" in line and "head.bias: file (2,) vs model (3,)" in line and "re-save" in line


def test_newer_checkpoint_format_is_refused_naming_both_versions(cli, tiny_checkpoint, tmp_path):
    bad = edited_checkpoint(tiny_checkpoint, tmp_path / "v99.pt", format_version=99)
    line = assert_refused(cli, "eval", bad, "--count", "2", watch=[tmp_path], match="format version 99 is newer")
    assert "(version 1)" in line and "upgrade edgeseg" in line


def test_folder_without_manifest_is_neither_checkpoint_nor_export_dir(cli, tmp_path):
    (tmp_path / "run").mkdir()
    line = assert_refused(cli, "eval", tmp_path / "run", "--count", "2", watch=[tmp_path], match="is a folder")
    assert "not an export dir either" in line and "not found" not in line


def test_exported_file_copied_without_its_manifest_says_to_keep_them_together(cli, shared_export, tmp_path):
    """The file's message named only its new folder ('no manifest.json (is this an edgeseg export directory?)')."""
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(shared_export.dir / "tiny-int8.tflite", assets / "model.tflite")
    line = assert_refused(cli, "predict", assets / "model.tflite", images, "--out", tmp_path / "o", watch=[tmp_path],
                          match=f"{assets / 'model.tflite'}: no manifest.json beside it")
    assert line.endswith("keep the file with the manifest.json it was exported with (copy both), or give the export folder")


def test_bench_of_a_folder_without_manifest_names_that_folder(cli, tmp_path, monkeypatch):
    """`edgeseg bench exp` named '.' (the folder's parent)."""
    (tmp_path / "exp").mkdir()
    monkeypatch.chdir(tmp_path)
    line = assert_refused(cli, "bench", "exp", watch=[tmp_path], match="error: exp: no manifest.json")
    assert "give the folder 'edgeseg export' wrote" in line


def test_exported_file_or_manifest_given_as_checkpoint_says_so(cli, tmp_path):
    """'not a PyTorch checkpoint (could not unpickle: Unsupported operand 8)' for `edgeseg export X-int8.onnx`."""
    for name in ("m-int8.onnx", "m-int8.tflite", "manifest.json"):
        (tmp_path / name).write_bytes(b"\x08\x09 not a pickle")
        line = assert_refused(cli, "export", tmp_path / name, "--out", tmp_path / "out", watch=[tmp_path],
                              match=f"{tmp_path / name} is an ")
        assert "not a checkpoint; this starts from a PyTorch .pt checkpoint" in line and "unpickle" not in line


def test_export_dir_given_as_checkpoint_says_so(cli, tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "manifest.json").write_text("{}")
    assert_refused(cli, "export", tmp_path / "exp", "--out", tmp_path / "out", "--formats", "onnx", "--precisions", "fp32",
                   watch=[tmp_path], match="is a folder (an export dir), not a checkpoint file")


@pytest.mark.parametrize("content,match", [
    (os.urandom(4096), "not a PyTorch checkpoint (could not unpickle: "),
    (b"", "is empty (0 bytes)"),
    (b"hello\n", "not a PyTorch checkpoint (could not unpickle: "),
], ids=["random", "empty", "text"])
def test_file_that_is_not_a_checkpoint(cli, tmp_path, content, match):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(content)
    line = assert_refused(cli, "eval", bad, "--count", "2", watch=[tmp_path], match=match)
    assert "file an issue" not in line.lower() and "weights_only" not in line


def test_truncated_checkpoint(cli, tiny_checkpoint, tmp_path):
    bad = tmp_path / "cut.pt"
    raw = tiny_checkpoint.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    assert_refused(cli, "eval", bad, "--count", "2", watch=[tmp_path], match="archive is truncated or corrupt")


def test_pickle_that_references_code_is_refused_with_its_reason(cli, tmp_path):
    sentinel = tmp_path / "ran"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "edgeseg.checkpoint", "payload": RunsCode(sentinel)}, bad)
    for args in (("eval", bad, "--count", "2"),
                 ("train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", tmp_path / "run", "--weights", bad)):
        line = assert_refused(cli, *args, watch=[tmp_path], match="references Python code")
        assert "unsupported global" in line.lower() and "system" in line  # torch's reason, not cut
        assert not sentinel.exists()


def test_resume_with_a_changed_model_names_last_pt_and_the_setting(cli, tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint.parent / "last.pt", run / "last.pt")
    line = assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", run, "--resume",
                          "--set", "model.width=0.75", watch=[tmp_path], match=f"{run / 'last.pt'} was started with")
    assert "model.width=0.75 (the run has 0.5)" in line and "train into a new --out" in line


# ---------------------------------------------------------------------------------------------
# Calibration folder and exported files


def test_calib_file_says_it_must_be_a_folder(cli, tiny_checkpoint, tmp_path):
    calib = tmp_path / "calib.jpg"
    calib.write_bytes(b"not a folder")
    assert_refused(cli, "export", tiny_checkpoint, "--out", tmp_path / "out", "--formats", "onnx", "--precisions", "fp32",
                   "--calib", calib, watch=[tmp_path], match="is a file; it must be a folder")


def tflite_export_dir(root: Path, content: bytes) -> Path:
    """An export dir (manifest.json + one .tflite holding ``content``), written by hand."""
    root.mkdir()
    (root / "m-fp32.tflite").write_bytes(content)
    size, sha = file_digest(root / "m-fp32.tflite")
    art = Artifact("tflite", "fp32", "m-fp32.tflite", size, sha,
                   input={"name": "x", "shape": [1, 64, 64, 3], "dtype": "float32", "layout": "NHWC", "expects": "normalized"},
                   output={"name": "y", "shape": [1, 64, 64, 2], "dtype": "float32", "layout": "NHWC"})
    model = {"name": "m", "classes": ["background", "person"], "input": {"height": 64, "width": 64},
             "mean": [127.5] * 3, "std": [127.5] * 3}
    Manifest(model=model, tools={}, artifacts=[art]).write(root)
    return root / "m-fp32.tflite"


def test_empty_tflite_says_re_export(cli, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="LiteRT (edgeseg[tflite]) runs .tflite files")
    empty = tflite_export_dir(tmp_path / "exp", b"")
    line = assert_refused(cli, "eval", empty, "--count", "2", watch=[tmp_path], match=f"{empty} is empty (0 bytes)")
    assert "re-export" in line and "model_path" not in line


# ---------------------------------------------------------------------------------------------
# A model name becomes file names: it must never reach outside --out


@pytest.mark.parametrize("name", ["ABSOLUTE", "../../victim", "sub/victim", ".hidden", "a b", "x" * 101, ""])
def test_checkpoint_name_that_is_not_a_plain_file_name_is_refused_before_any_work(cli, tiny_checkpoint, tmp_path, name):
    """An edited info.name like '../../victim' made export write victim-fp32.onnx outside --out, over a user's file."""
    victim_dir = tmp_path / "elsewhere"
    victim_dir.mkdir()
    (victim_dir / "victim-fp32.onnx").write_bytes(b"the user's own file")
    name = str(victim_dir / "victim") if name == "ABSOLUTE" else name
    bad = edited_checkpoint(tiny_checkpoint, tmp_path / "named.pt", info={"name": name})
    out = tmp_path / "a" / "b" / "out"
    for args in (("export", bad, "--out", out, "--formats", "onnx", "--precisions", "fp32", "--parity-images", "2"),
                 ("eval", bad, "--count", "2")):
        line = assert_refused(cli, *args, watch=[tmp_path], match=f"{bad}: edgeseg checkpoint field 'info.name' is")
        assert "plain file name" in line and "recipe 'name'" in line


@pytest.mark.parametrize("name", ["../victim", "/tmp/victim", ".hidden", "a b", "x" * 101])
def test_recipe_name_that_is_not_a_plain_file_name_is_refused(cli, tmp_path, name):
    """Training copies the recipe name into the checkpoint, and from there into exported file names."""
    recipe = write_recipe(tmp_path / "r.yaml")
    assert_refused(cli, "train", "--recipe", recipe, "--out", tmp_path / "run", "--set", f"name={name}",
                   watch=[tmp_path], match="recipe key 'name' is")


def test_recipe_file_name_that_cannot_be_a_model_name_asks_for_a_name(cli, tmp_path):
    recipe = tmp_path / "my recipe.yaml"
    recipe.write_text("model: {arch: unet_mobilenet_v3_small}\n")
    line = assert_refused(cli, "train", "--recipe", recipe, "--out", tmp_path / "run", watch=[tmp_path],
                          match="the recipe sets no 'name' and its file name 'my recipe' cannot stand in for one")
    assert "add name:" in line


def test_binary_recipe_file_is_refused_naming_the_file(cli, tmp_path):
    recipe = tmp_path / "model.yaml"
    recipe.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2048))
    assert_refused(cli, "train", "--recipe", recipe, "--out", tmp_path / "run", watch=[tmp_path],
                   match=f"{recipe}: not a text file")


# ---------------------------------------------------------------------------------------------
# Malformed checkpoints that carry edgeseg's marker


@pytest.mark.parametrize("changes,match", [
    ({"recipe": [1, 2]}, "'recipe' is [1, 2]; it must be a mapping"),
    ({"recipe": {"data": "portrait"}}, "'recipe.data' is 'portrait'; it must be a mapping"),
    ({"recipe": {"data": {"root": 5}}}, "'recipe.data.root' is 5"),
    ({"info": {"mean": [1, 2]}}, "'info.mean' is [1, 2]; it must be three finite numbers"),
    ({"info": {"mean": [1, 2, float("nan")]}}, "'info.mean' is [1, 2, nan]"),
    ({"info": {"std": [0, 0, 0]}}, "'info.std' is [0, 0, 0]; it must be three finite numbers > 0"),
    ({"info": {"input_size": [64, 0]}}, "'info.input_size' is [64, 0]"),
    ({"info": {"input_size": [64.5, 64]}}, "'info.input_size' is [64.5, 64]"),
    ({"info": {"classes": []}}, "'info.classes' is []"),
    ({"info": {"classes": ["a", "a"]}}, "'info.classes' is ['a', 'a']; it must be a non-empty list of distinct"),
    ({"info": "tiny"}, "'info' is 'tiny'; it must be a mapping"),
    ({"state_dict": [1]}, "'state_dict' is not a mapping of names to tensors"),
], ids=["recipe-list", "data-str", "root-int", "mean-2", "mean-nan", "std-0", "size-0", "size-float", "classes-empty",
        "classes-repeated", "info-str", "state-list"])
def test_malformed_checkpoint_fields_are_refused_on_load(cli, tiny_checkpoint, tmp_path, changes, match):
    """Each crashed (AttributeError, numpy broadcast error) or, for std 0, ran to exit 0 with IoU 0."""
    if isinstance(changes.get("info"), dict):
        bad = edited_checkpoint(tiny_checkpoint, tmp_path / "bad.pt", **changes)
    else:
        payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
        bad = tmp_path / "bad.pt"
        torch.save({**payload, **changes}, bad)
    for args in (("eval", bad, "--count", "2"),
                 ("export", bad, "--out", tmp_path / "out", "--formats", "onnx", "--precisions", "fp32")):
        line = assert_refused(cli, *args, watch=[tmp_path], match=f"{bad}: edgeseg checkpoint field {match}")
        assert "re-save it from its training run" in line


# ---------------------------------------------------------------------------------------------
# .mlpackage paths that are not packages: refused before coremltools is imported (its warnings)


@pytest.mark.parametrize("kind", ["file", "empty folder"])
def test_mlpackage_that_is_not_a_package_is_refused_before_coremltools(cli, tmp_path, kind):
    pkg = tmp_path / "y.mlpackage"
    if kind == "file":
        pkg.write_text("x\n")
        match = "(a package is a folder; this is a file)"
    else:
        pkg.mkdir()
        match = "(no Manifest.json)"
    assert_refused(cli, "inspect", pkg, watch=[tmp_path], match=f"{pkg}: not a Core ML .mlpackage {match}")
    r = run_edgeseg("inspect", pkg)  # a fresh process: nothing imported coremltools (and printed its warnings) yet
    assert r.returncode == 2, r.stderr
    assert match in one_line_error(r.stderr)


# ---------------------------------------------------------------------------------------------
# Output paths the file system cannot hold


def _commands_writing(out: Path, checkpoint: Path, images: Path) -> dict[str, tuple]:
    return {"data synth": ("data", "synth", out, "--count", "1", "--size", "64"),
            "predict": ("predict", checkpoint, images, "--out", out),
            "export": ("export", checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32"),
            "eval": ("eval", checkpoint, "--count", "2", "--json", out),
            "train": ("train", "--recipe", write_recipe(images.parent / "r.yaml"), "--out", out)}


@pytest.mark.parametrize("command", ["data synth", "predict", "export", "eval", "train"])
def test_output_name_over_255_bytes_is_refused(cli, tiny_checkpoint, tmp_path, command):
    """path.exists() raised OSError ENAMETOOLONG: a traceback."""
    images = tmp_path / "in"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    out = tmp_path / "sub" / ("n" * 300) / "x"
    args = _commands_writing(out, tiny_checkpoint, images)[command]
    line = assert_refused(cli, *args, watch=[tmp_path], match="a name in it is 300 bytes, longer than file systems allow (255)")
    assert "choose a shorter name" in line


@pytest.mark.parametrize("command", ["data synth", "export", "predict"])
@pytest.mark.parametrize("where", ["output", "ancestor"])
def test_output_that_is_a_dangling_symlink_is_refused(cli, tiny_checkpoint, tmp_path, command, where):
    """`ln -s /nowhere d; edgeseg data synth d` failed late, in os.replace, with a traceback."""
    images = tmp_path / "in"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    link = tmp_path / "d"
    link.symlink_to(tmp_path / "nowhere")
    out = link if where == "output" else link / "sub"
    args = _commands_writing(out, tiny_checkpoint, images)[command]
    before = sorted(tmp_path.iterdir())
    # (tree_state cannot hash a dangling link: the folders beside it are watched, the link is checked here)
    line = assert_refused(cli, *args, watch=[images], match=f"{link} is a symlink to {tmp_path / 'nowhere'}, which does not exist")
    assert "remove the link or choose another path" in line
    assert sorted(tmp_path.iterdir()) == before and os.readlink(link) == str(tmp_path / "nowhere")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["data synth", "eval", "train"])
def test_output_on_a_file_system_that_takes_no_new_files_is_refused_before_any_work(cli, tiny_checkpoint, tmp_path, command):
    """`eval --json /proc/x.json` ran the whole evaluation, then failed writing with ENOENT: traceback, exit 1
    (os.access says yes to root there)."""
    images = tmp_path / "in"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    args = _commands_writing(Path("/proc/edgeseg-out"), tiny_checkpoint, images)[command]
    line = assert_refused(cli, *args, watch=[tmp_path], match="/proc/edgeseg-out: ")
    # root passes os.access there and is refused by the write probe; anyone else is refused before it
    assert ("cannot write in /proc (" in line if os.geteuid() == 0 else "/proc is not writable" in line), line
    assert line.endswith("choose a writable location")


# ---------------------------------------------------------------------------------------------
# The machine says no: a full disk, a quota, a read-only or forbidden location


@pytest.mark.parametrize("command", ["data synth", "export"])
def test_disk_full_is_one_line_and_leaves_nothing(cli, tiny_checkpoint, small_disk, command):
    args = {"data synth": ("data", "synth", small_disk / "d", "--count", "200", "--size", "64"),
            "export": ("export", tiny_checkpoint, "--out", small_disk / "e", "--formats", "onnx", "--precisions", "fp32",
                       "--parity-images", "2")}[command]
    line = assert_refused(cli, *args, watch=[small_disk], match=f"error: No space left on device: {small_disk}/")
    assert line.endswith("; free space or choose another location"), line
    assert list(small_disk.iterdir()) == []  # the staging folder was removed


def _raises(exc: BaseException):
    from edgeseg.cli import handle_errors

    @click.command()
    @handle_errors
    def cmd():
        raise exc
    return CliRunner().invoke(cmd, [])


@pytest.mark.parametrize("code,fix", [
    (errno.ENOSPC, "free space or choose another location"),
    (errno.EDQUOT, "free space (or raise the quota) or choose another location"),
    (errno.EROFS, "choose a writable location"),
    (errno.EACCES, "fix its permissions or choose another location"),
    (errno.EPERM, "fix its permissions or choose another location"),
    (errno.ENAMETOOLONG, "choose a shorter name or location"),
])
def test_environment_errors_are_one_line_naming_the_file(code, fix):
    result = _raises(OSError(code, os.strerror(code), "/data/out/model.onnx"))
    assert result.exit_code == 2
    assert one_line_error(result.stderr) == f"error: {os.strerror(code)}: /data/out/model.onnx; {fix}"


def test_environment_error_without_a_filename_names_the_file_being_written(tmp_path):
    """A failed write() or close() carries no file name: the one open for writing is named."""
    def write():
        with open(tmp_path / "partial.bin", "wb") as f:
            f.write(b"x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from edgeseg.cli import handle_errors

    result = CliRunner().invoke(click.command()(handle_errors(write)), [])
    assert one_line_error(result.stderr) == (f"error: {os.strerror(errno.ENOSPC)}: {tmp_path / 'partial.bin'}; "
                                             "free space or choose another location")


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error"), ConnectionRefusedError(), ValueError("bug")],
                         ids=["EIO", "ECONNREFUSED", "ValueError"])
def test_other_exceptions_keep_their_traceback(exc):
    result = _raises(exc)
    assert result.exit_code == 1 and result.exception is exc
