"""Export pipeline behaviour shared by all formats: manifest, atomicity, exit codes 1 and 2."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeseg.manifest import file_digest, read_manifest

from conftest import one_line_error, run_edgeseg

MANIFEST_MODEL_KEYS = {"name", "architecture", "classes", "input", "mean", "std", "params", "macs", "checkpoint"}
ARTIFACT_KEYS = {"format", "precision", "path", "bytes", "sha256", "input", "output", "parity", "quantized"}
PARITY_KEYS = {"reference", "images", "agreement_miou", "gt_miou", "reference_gt_miou", "max_abs_logit_diff", "runtime",
               "threshold", "passed"}


@pytest.fixture(scope="module")
def onnx_export(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "onnx"
    # int8 threshold relaxed: a 40-step model has small logit margins (see test_export_formats)
    r = run_edgeseg("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--parity-images", "4", "--calib-count", "4",
                    "--threshold", "int8=0.9")
    assert r.returncode == 0, r.stderr + r.stdout
    return out, r


def test_manifest_has_design_fields(onnx_export, tiny_checkpoint):
    out, _ = onnx_export
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["schema_version"] == 1 and MANIFEST_MODEL_KEYS <= set(raw["model"])
    assert raw["model"]["mean"] == [127.5] * 3 and raw["model"]["input"] == {"height": 64, "width": 64}
    assert {"torch", "onnxruntime", "edgeseg"} <= set(raw["tools"])
    assert [a["precision"] for a in raw["artifacts"]] == ["fp32", "fp16", "int8"]
    for a in raw["artifacts"]:
        assert ARTIFACT_KEYS <= set(a) and PARITY_KEYS <= set(a["parity"])
        assert a["path"] == f"tiny-{a['precision']}.onnx"
        assert (a["bytes"], a["sha256"]) == file_digest(out / a["path"])
        assert a["input"]["layout"] == "NCHW" and a["input"]["expects"] == "normalized"
        assert a["parity"]["passed"] is True and a["parity"]["runtime"] == "onnxruntime"
    assert raw["artifacts"][2]["details"]["activation_type"] == "uint8"


def test_export_prints_table(onnx_export):
    _, r = onnx_export
    assert "agreement mIoU" in r.stdout and "PASS" in r.stdout and "max |Δlogit|" in r.stdout


def test_rerun_replaces_cleanly(onnx_export, tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    assert run_edgeseg("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32,fp16",
                       "--parity-images", "2").returncode == 0
    (out / "stray.txt").write_text("left over")
    r = run_edgeseg("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32", "--parity-images", "2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "tiny-fp32.onnx"]


def test_interrupted_export_leaves_previous_output_intact(onnx_export, tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    assert run_edgeseg("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32",
                       "--parity-images", "2").returncode == 0
    before = {p.name: file_digest(p) for p in out.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "edgeseg.cli", "export", str(tiny_checkpoint), "--out", str(out),
                             "--formats", "onnx", "--precisions", "fp32,fp16,int8", "--parity-images", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "exported" in proc.stdout.readline()  # first file written into staging
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {p.name: file_digest(p) for p in out.iterdir()} == before
    # the killed run's staging folder is not mistaken for an export
    assert not any(p.name.endswith(".onnx") for p in tmp_path.iterdir())


def test_parity_failure_exits_1_and_keeps_files(tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    r = run_edgeseg("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32",
                    "--parity-images", "2", "--threshold", "fp32=1.01")
    assert r.returncode == 1, r.stderr
    m = read_manifest(out)
    assert m.artifacts[0].parity["passed"] is False and (out / "tiny-fp32.onnx").is_file()
    assert "FAILED" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--formats", "onnx", "--precisions", "pal6"], "onnx export does not support precision 'pal6'"),
    (["--formats", "caffe"], "unknown format 'caffe'"),
    (["--calib", "/nonexistent/calib"], "calibration folder not found"),
])
def test_bad_usage_exits_2(tiny_checkpoint, tmp_path, cli, args, needle):
    res = cli("export", tiny_checkpoint, "--out", tmp_path / "e", *args)
    assert res.exit_code == 2 and needle in one_line_error(res.output)
    assert not (tmp_path / "e").exists()


def test_bad_checkpoints_exit_2(tmp_path, cli, tiny_checkpoint):
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    for path, needle in ((tmp_path / "missing.pt", "checkpoint not found"), (truncated, "cannot be read"),
                         (foreign, "not an edgeseg checkpoint")):
        res = cli("export", path, "--out", tmp_path / "e", "--formats", "onnx")
        assert res.exit_code == 2 and needle in one_line_error(res.output)


def test_missing_extra_names_the_extra(tiny_checkpoint, tmp_path):
    # A module that cannot be imported is exactly what a user without the [coreml] extra has.
    blocker = tmp_path / "block" / "coremltools"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('coremltools is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    r = subprocess.run([sys.executable, "-m", "edgeseg.cli", "export", str(tiny_checkpoint), "--out", str(tmp_path / "e"),
                        "--formats", "coreml"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert "pip install 'edgeseg[coreml]'" in one_line_error(r.stderr)
