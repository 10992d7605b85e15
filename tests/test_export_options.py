"""``edgeseg export`` options that would do nothing in this export, and what the manifest records about the
model's origin and its calibration.

Refusals run the real CLI in-process on the packaged default model: they stop after reading the checkpoint,
before any image set, conversion or output folder. The manifest checks use one small real export of the tiny
checkpoint (ONNX fp32, 2 parity images, no stress set).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

import edgeseg
from conftest import assert_refused, invoke_cli

FP32_ONLY = ("--formats", "onnx", "--precisions", "fp32")
NO_INT8 = "--precisions has no int8, the only calibrated precision; add int8 to --precisions"


@pytest.mark.parametrize("args, expected", [
    (("--calib-count", "5"), f"error: --calib-count 5 would be unused: {NO_INT8}, or drop --calib-count"),
    (("--calib-method", "percentile"),
     f"error: --calib-method percentile would be unused: {NO_INT8}, or drop --calib-method"),
    (("--calib-count", "5", "--calib-method", "entropy"),
     f"error: --calib-count 5 and --calib-method entropy would be unused: {NO_INT8}, or drop --calib-count and "
     "--calib-method"),
    (("--stress", "report", "--stress-threshold", "int8=0.9"),
     "error: --stress-threshold int8=0.9: this export makes no int8 file (--precisions fp32); add int8 to "
     "--precisions, or drop --stress-threshold int8=0.9"),
    (("--threshold", "int8=0.97"),
     "error: --threshold int8=0.97: this export makes no int8 file (--precisions fp32); add int8 to --precisions, "
     "or drop --threshold int8=0.97"),
    (("--threshold", "fp32=0.99", "--threshold", "fp16=0.99", "--threshold", "int8=0.9"),
     "error: --threshold fp16=0.99,int8=0.9: this export makes no fp16 or int8 files (--precisions fp32); add fp16 "
     "and int8 to --precisions, or drop --threshold fp16=0.99,int8=0.9"),
], ids=["calib-count", "calib-method", "both-calib-options", "stress-threshold", "threshold", "thresholds"])
def test_an_option_this_export_would_ignore_is_refused_before_any_work(cli, tmp_path, args, expected):
    out = tmp_path / "z1"
    line = assert_refused(cli, "export", "--out", out, *FP32_ONLY, *args, watch=[tmp_path])
    assert line == expected
    assert not out.exists()


def test_calibration_options_are_refused_when_only_core_ml_int8_is_made(cli, tmp_path):
    """Core ML's int8 compresses weights and is never calibrated on images: --calib-count does nothing there."""
    out = tmp_path / "ml"
    line = assert_refused(cli, "export", "--out", out, "--formats", "coreml", "--precisions", "int8",
                          "--calib-count", "8", watch=[tmp_path])
    assert line == ("error: --calib-count 8 would be unused: no format in --formats (coreml) calibrates its int8 file "
                    "on images; add onnx or tflite or executorch to --formats, or drop --calib-count")


def test_the_python_api_refuses_the_same_options(tmp_path):
    out = tmp_path / "api"
    with pytest.raises(edgeseg.EdgesegError, match="^--calib-method percentile would be unused: --precisions has no "
                                                   "int8"):
        edgeseg.export_checkpoint(None, out, "onnx", "fp32", calib_method="percentile")
    with pytest.raises(edgeseg.EdgesegError, match=r"^--stress-threshold int8=0\.9: this export makes no int8 file"):
        edgeseg.export_checkpoint(None, out, ["onnx"], ["fp32", "fp16"], stress="report",
                                  stress_thresholds={"int8": 0.9})
    with pytest.raises(edgeseg.EdgesegError, match=r"^--threshold pal6=0\.9: this export makes no pal6 file"):
        edgeseg.export_checkpoint(None, out, "onnx", "fp32,int8", thresholds={"pal6": 0.9})
    assert not out.exists()


@pytest.fixture(scope="module")
def fp32_export(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported to ONNX fp32 from a relative path in another working directory, as
    ``cd /tmp/x && edgeseg export pr_ck.pt --out prexp``: (work dir, export dir, CLI result)."""
    work = tmp_path_factory.mktemp("x")
    shutil.copy(tiny_checkpoint, work / "pr_ck.pt")
    result = invoke_cli("export", "pr_ck.pt", "--out", "prexp", *FP32_ONLY, "--parity-images", "2", "--stress", "off",
                        "--threshold", "fp32=0.99", cwd=work)
    assert result.exit_code == 0, result.output[-3000:]
    return work, work / "prexp", result


def test_an_export_that_calibrates_nothing_records_no_calibration(fp32_export):
    _, out, result = fp32_export
    model = json.loads((out / "manifest.json").read_text())["model"]
    assert "calibration" not in model, model.get("calibration")
    assert "calibration" not in result.output and "warning" not in result.output
    # a threshold of a precision it makes is taken (recorded with the defaults' others)
    assert json.loads((out / "manifest.json").read_text())["parity_reference"]["thresholds"]["fp32"] == 0.99


def test_the_manifest_records_the_checkpoints_absolute_path_and_bench_finds_it_from_elsewhere(fp32_export,
                                                                                           monkeypatch):
    work, out, _ = fp32_export
    checkpoint = json.loads((out / "manifest.json").read_text())["model"]["checkpoint"]
    assert checkpoint["path"] == os.path.join(str(work), "pr_ck.pt")

    from edgeseg.bench.harness import reference_checkpoint
    from edgeseg.manifest import read_manifest

    monkeypatch.chdir("/")  # `cd / && edgeseg bench /tmp/x/prexp`: the PyTorch row's checkpoint is found
    found = reference_checkpoint(read_manifest(out))
    assert found is not None and found.sha256 == checkpoint["sha256"]


def test_fewer_parity_images_than_asked_say_so(tiny_checkpoint, tmp_path, cli):
    """A small --data set's val split gave 1 parity image where 4 were asked, and the table said PASS silently."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "ds"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # the val split: 10% of them
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / "images" / f"im{i}.png")
        Image.fromarray((rng.random((64, 64)) > 0.5).astype(np.uint8)).save(data / "masks" / f"im{i}.png")
    (data / "classes.txt").write_text("background\nperson\n")
    r = cli("export", tiny_checkpoint, "--out", tmp_path / "e", *FP32_ONLY, "--data", data, "--parity-images", "4",
            "--stress", "off")
    assert r.exit_code == 0, r.output[-3000:]
    (art,) = json.loads((tmp_path / "e" / "manifest.json").read_text())["artifacts"]
    n = art["parity"]["images"]
    assert 1 <= n < 4 and art["parity"]["data"] == f"{data} (val split, {n} image{'s' * (n != 1)})"
    assert (f"warning: --data {data}: its val split has {n} image{'s' * (n != 1)}, fewer than --parity-images 4: "
            "parity and stress parity are checked on those only") in r.stderr


def test_a_moved_checkout_still_finds_the_checkpoint_by_the_path_as_typed(fp32_export, tmp_path, monkeypatch):
    """Only the absolute path was recorded: a CI job whose checkout lives elsewhere lost the PyTorch row."""
    from edgeseg.bench.harness import reference_checkpoint
    from edgeseg.manifest import read_manifest

    work, out, _ = fp32_export
    moved = shutil.copytree(work, tmp_path / "elsewhere")
    doc = json.loads((moved / "prexp" / "manifest.json").read_text())
    assert doc["model"]["checkpoint"]["given"] == "pr_ck.pt"
    doc["model"]["checkpoint"]["path"] = str(tmp_path / "gone" / "pr_ck.pt")  # the old checkout is not here
    (moved / "prexp" / "manifest.json").write_text(json.dumps(doc))
    monkeypatch.chdir(moved)
    manifest = read_manifest(moved / "prexp")
    assert [str(p) for p in manifest.checkpoint_paths()] == [str(tmp_path / "gone" / "pr_ck.pt"), "pr_ck.pt"]
    found = reference_checkpoint(manifest)
    assert found is not None and found.sha256 == doc["model"]["checkpoint"]["sha256"]
    (moved / "pr_ck.pt").write_bytes(b"other bytes")  # a file of that name that is not the checkpoint: not trusted
    assert reference_checkpoint(manifest) is None
