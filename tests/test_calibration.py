"""The calibration workload: committed files are the network the code builds, and each result
is normalized by the workload of its own runtime and precision class."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.bench.latency_reference import ASSETS, calibration_image, calibration_net, open_workload
from edgeseg.manifest import read_manifest
from edgeseg.runtime.loader import runner_for_artifact
from edgeseg.runtime.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def torch_logits():
    from edgeseg.bench.latency_reference import INFO

    runner = TorchRunner(calibration_net(), input_size=INFO.input_size, mean=INFO.mean, std=INFO.std, threads=1)
    return runner.run(calibration_image()[None])


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "coreml"])
def test_committed_fp32_files_are_the_calibration_net(fmt, torch_logits):
    manifest = read_manifest(ASSETS)
    with runner_for_artifact(manifest.find(fmt, "fp32"), manifest, 1) as runner:
        out = runner.run(calibration_image()[None])
    assert out.shape == torch_logits.shape == (1, 2, 256, 256)
    rel = np.abs(out - torch_logits).max() / np.abs(torch_logits).max()
    assert rel < 1e-3, rel


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_committed_int8_files_track_the_calibration_net(fmt, torch_logits):
    manifest = read_manifest(ASSETS)
    art = manifest.find(fmt, "int8")
    assert "int8" in art.quantized
    with runner_for_artifact(art, manifest, 1) as runner:
        out = runner.run(calibration_image()[None])
    assert np.corrcoef(out.ravel(), torch_logits.ravel())[0, 1] > 0.9


def test_committed_files_match_their_manifest():
    from edgeseg.manifest import file_digest

    for art in read_manifest(ASSETS).artifacts:
        assert file_digest(art.file) == (art.bytes, art.sha256), art.path


@pytest.mark.parametrize("fmt,precision,expected", [
    ("pytorch", "fp32", "fp32 (pytorch eager)"),
    ("onnx", "fp16", "fp32 (onnxruntime)"),
    ("onnx", "int8", "int8 (onnxruntime)"),
    ("tflite", "fp16", "fp32 (litert)"),
    ("tflite", "int8", "int8 (litert)"),
    ("coreml", "fp32", "fp32 (coreml"),  # coreml-reference here, Apple's runtime on macOS
    ("coreml", "int8", "fp16 (coreml"),  # weight-only int8: fp16 compute
])
def test_workload_matches_the_result_runtime(fmt, precision, expected):
    workload = open_workload(fmt, precision, 1)
    try:
        assert expected in workload.name
        assert workload.run_once() > 0
    finally:
        workload.close()
