"""Bad input files, each refused with one line naming the file, the problem and the fix (exit 2).

Checkpoints (misfit weights, a newer format, folders, random bytes, a pickle that references
code), a resumed run whose recipe changed, a file given as a calibration folder and an empty
.tflite. Every case runs the real CLI and checks that nothing was written (``assert_refused``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from edgeseg.manifest import Artifact, Manifest, file_digest

from conftest import assert_refused, write_recipe


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


def test_resume_after_the_model_changed_names_last_pt(cli, tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint.parent / "last.pt", run / "last.pt")
    line = assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", run, "--resume",
                          "--set", "model.width=0.75", watch=[tmp_path], match=f"{run / 'last.pt'} does not fit")
    assert "shape mismatch" in line and "fresh --out" in line


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
