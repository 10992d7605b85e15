"""``edgeseg bench`` of ExecuTorch files: the committed calibration workload has its .pte files (added
beside the others, whose bytes stay as committed baselines knew them), and a bench at two thread counts
times both precisions at both counts, each against its own ExecuTorch calibration workload, although
ExecuTorch's thread pool belongs to the whole process."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("executorch.runtime")

from edgeseg.bench.latency_reference import (ASSETS, INFO, CalibrationPool, asset_precisions, calibration_image,  # noqa: E402
                                             calibration_net)
from edgeseg.manifest import file_digest, read_manifest  # noqa: E402
from edgeseg.runtime.loader import runner_for_artifact  # noqa: E402
from edgeseg.runtime.torch_runner import TorchRunner  # noqa: E402

from conftest import invoke_cli  # noqa: E402

# The calibration files committed before ExecuTorch's were added (benchmarks/make_calibration.py --add):
# every committed baseline was normalized by these bytes.
COMMITTED = {
    "calibration-fp32.onnx": "4d95620e85ff2de201a99a2826c00905691b4afa76a5739ee93424e81c1687c0",
    "calibration-int8.onnx": "4ff65b8e62f8ba5f2a50be0fafbd3bd91231c98917b655f00b067e4f9bfd308f",
    "calibration-fp32.tflite": "4e6740f4764a2a545027a1cb684447e3e01057a2f138b90f5859893239d02502",
    "calibration-int8.tflite": "f151417aad5718966b248d9f1a975bd4ee27f69d8662dbcb5a32013fa48992f3",
    "calibration-fp32.mlpackage": "126dcd4f5fa404c46f10f3951ddbe36da09ee1b953845566d68de2786f101540",
    "calibration-fp16.mlpackage": "d9e16b2b3ba11a155bb012579f7207e3c3ac9bfd75812a7bc19c40aa68982284",
}


def test_calibration_manifest_lists_the_pte_files_and_keeps_the_others():
    manifest = read_manifest(ASSETS)
    assert asset_precisions("executorch") == ("fp32", "int8")
    for precision in ("fp32", "int8"):
        art = manifest.find("executorch", precision)
        assert art is not None and art.path == f"calibration-{precision}.pte"
        assert file_digest(art.verified_file()) == (art.bytes, art.sha256)
        assert art.details["delegation"]["not_delegated"] == {}  # XNNPACK runs every op
    assert {a.path: a.sha256 for a in manifest.artifacts if a.format != "executorch"} == COMMITTED
    for art in manifest.artifacts:
        assert file_digest(art.verified_file()) == (art.bytes, art.sha256), art.path


def test_pte_calibration_files_are_the_calibration_net():
    manifest = read_manifest(ASSETS)
    torch_out = TorchRunner(calibration_net(), input_size=INFO.input_size, mean=INFO.mean, std=INFO.std,
                            threads=1).run(calibration_image()[None])
    outs = {}
    for precision in ("fp32", "int8"):
        with runner_for_artifact(manifest.find("executorch", precision), manifest, 1) as runner:
            outs[precision] = runner.run(calibration_image()[None])
    assert outs["fp32"].shape == torch_out.shape == (1, 2, 256, 256)
    assert np.abs(outs["fp32"] - torch_out).max() / np.abs(torch_out).max() < 1e-3
    assert np.corrcoef(outs["int8"].ravel(), torch_out.ravel())[0, 1] > 0.9


def test_workload_pool_frees_the_executorch_pool_for_another_thread_count():
    """A cached ExecuTorch workload at 1 thread would make a runner at 2 threads fail (the pool is the
    process's): make_room closes it first, and only it; names() still lists every workload used."""
    manifest = read_manifest(ASSETS)
    with CalibrationPool() as pool:
        one = pool.get("executorch", "fp32", 1)
        onnx = pool.get("onnx", "fp32", 1)
        pool.make_room("executorch", 1)  # same count: kept
        assert one.runner.method is not None
        pool.make_room("executorch", 2)
        assert one.runner.method is None and onnx.runner.run(onnx.batch).shape == (1, 2, 256, 256)
        with runner_for_artifact(manifest.find("executorch", "int8"), manifest, 2) as runner:
            assert runner.run(calibration_image()[None]).shape == (1, 2, 256, 256)
        two = pool.get("executorch", "int8", 2)  # get makes room itself
        assert two.run_once() > 0
        assert any(n.endswith("fp32 (executorch)") for n in pool.names())
        assert any(n.endswith("int8 (executorch)") for n in pool.names())


def test_bench_times_both_precisions_at_both_thread_counts(executorch_export, tmp_path):
    out = tmp_path / "bench.json"
    r = invoke_cli("bench", executorch_export, "--threads", "1,2", "--runs", "3", "--warmup", "1",
                   "--sessions", "1", "--parity-images", "2", "--json", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    rows = {(x["precision"], x["threads"]): x for x in doc["results"] if x["format"] == "executorch"}
    assert set(rows) == {("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)}
    for (precision, _), row in rows.items():
        assert row["runtime"] == "executorch" and row["latency_ms"]["p50"] > 0 and row["normalized_p50"] > 0
        assert row["calibration_workload"].endswith(f"{precision} (executorch)")
        assert row["parity"]["passed"] is True
    pairs = {p["threads"]: p for p in doc["int8_vs_fp32"]["pairs"] if p["runtime"] == "executorch"}
    assert set(pairs) == {1, 2} and all(p["ratio"] > 0 for p in pairs.values())
    assert "executorch" in doc["host"]["tools"]
    assert "int8 (executorch)" in doc["calibration"]["workload"]


def test_make_bench_exports_executorch_beside_the_other_formats():
    """``make bench``'s config: ExecuTorch in its own export (no fp16), benched in the same run as LiteRT;
    each export's format x precision list is one ``edgeseg export`` accepts."""
    import importlib.util

    from edgeseg.export.pipeline import load_exporters

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("run_bench", ROOT / "benchmarks" / "run_bench.py")
    run_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_bench)
    jobs = run_bench.export_jobs(run_bench.load_config(run_bench.DEFAULT_CONFIG)["export"])
    formats = [f for job in jobs for f in job["formats"]]
    assert {"tflite", "executorch"} <= set(formats) and len(formats) == len(set(formats))
    assert len({job["dir"] for job in jobs}) == len(jobs)
    for job in jobs:
        load_exporters(job["formats"], job["precisions"])
        assert {"calib_count", "parity_images", "stress"} <= set(job)
    assert next(job for job in jobs if "executorch" in job["formats"])["precisions"] == ["fp32", "int8"]
