"""edgeseg.bench.android: parsing real benchmark_model logs, adb command lines, adb checks.

The fixtures under tests/fixtures/benchmark_model/ are verbatim copies of published runs; each
file's header names its source. The numbers asserted here are the ones printed in those logs.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.bench import android
from edgeseg.bench.android import (build_commands, check_adb, parse_benchmark_output, parse_delegate,
                                   parse_params)
from edgeseg.errors import EdgesegError

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def _parse(name: str) -> dict:
    return parse_benchmark_output(_fixture(name))


def _approx(values: dict) -> dict:
    return {k: pytest.approx(v) if isinstance(v, float) else v for k, v in values.items()}


# --------------------------------------------------------------------------- fixtures parse

def test_every_fixture_has_a_source_header():
    files = sorted(FIXTURES.glob("*.txt"))
    assert len(files) >= 4
    for f in files:
        header = [line for line in f.read_text().splitlines() if line.startswith("# ")]
        assert any(line.startswith("# Source: https://github.com/") for line in header), f.name
        assert any(line.startswith("# Device:") for line in header), f.name
        assert any(line.startswith("# Trimmed:") for line in header), f.name


def test_android_cpu_older_format_tf24():
    # lp6m/yolov5s_android benchmark/README.md: Xiaomi Mi11, TF 2.4, CPU, "Peak memory footprint" line.
    r = _parse("android_mi11_cpu_tf2.4.txt")
    assert r["latency_ms"] == _approx({"mean": 249.684, "min": 247.067, "max": 254.474, "std": 1.442,
                                       "p50": 249.684, "first": 360.262, "warmup_mean": 304.586})
    assert "p5" not in r["latency_ms"] and "p95" not in r["latency_ms"]
    assert r["runs"] == 50
    assert r["init_ms"] == pytest.approx(16.242)  # no "Initialized session" line: from "Init: 16242" us
    assert r["memory_mb"] == _approx({"init": 4.92969, "overall": 138.809, "peak": 138.809})
    assert r["peak_memory_mb"] == pytest.approx(138.809)
    assert r["delegate"]["name"] is None
    assert r["params"] == {}


def test_android_gpu_delegate_tf23():
    # tensorflow/tensorflow#43541: Android phone, GPU delegate (OpenCL), TF 2.3-era format.
    r = _parse("android_gpu_opencl_tf2.3.txt")
    assert r["latency_ms"] == _approx({"mean": 119.375, "min": 113.737, "max": 124.776, "std": 1.948,
                                       "p50": 119.375, "first": 130.565, "warmup_mean": 122.373})
    assert r["runs"] == 50  # the measured run, not the warmup line (count=4)
    assert r["init_ms"] == pytest.approx(870.557)
    assert r["peak_memory_mb"] is None
    assert r["delegate"] == {"name": "GPU", "created": ["GPU"], "nodes_delegated": None, "nodes_total": None,
                             "partitions": None, "fully_delegated": True, "gpu_kernels": 1}
    assert r["params"] == {"num_runs": 50, "num_threads": 4, "warmup_runs": 1,
                           "graph": "/data/local/tmp/tflite/denoising_32bit.tflite", "use_gpu": True}


def test_newer_format_cpu_xnnpack_percentiles_and_memory():
    # qualcomm-linux/aiml-container-test README: QRB2210 RB1, XNNPACK, p5/median/p95 + memory delta.
    r = _parse("linux_rb1_cpu_xnnpack.txt")
    assert r["latency_ms"] == _approx({"mean": 105.784, "min": 105.416, "max": 106.528, "std": 0.260,
                                       "p50": 105.718, "p5": 105.485, "p95": 106.281,
                                       "first": 106.436, "warmup_mean": 106.065})
    assert r["runs"] == 50
    assert r["init_ms"] == pytest.approx(87.639)
    assert r["memory_mb"] == _approx({"init": 14.4414, "overall": 14.8164, "peak": 14.8164})
    assert r["delegate"]["name"] == "XNNPACK"
    assert r["delegate"]["fully_delegated"] is None
    assert r["params"] == {"graph": "mobilenet_quant_v1_224.tflite", "use_gpu": False}


def test_newer_format_gpu_delegate():
    r = _parse("linux_rb1_gpu_opencl.txt")
    assert r["latency_ms"] == _approx({"mean": 115.246, "min": 111.842, "max": 119.614, "std": 1.329,
                                       "p50": 115.350, "p5": 112.107, "p95": 116.620,
                                       "first": 125.113, "warmup_mean": 115.344})
    assert r["runs"] == 50
    assert r["init_ms"] == pytest.approx(1361.24)
    assert r["peak_memory_mb"] == pytest.approx(132.816)
    assert r["delegate"]["name"] == "GPU"
    assert r["delegate"]["fully_delegated"] is True
    assert r["delegate"]["gpu_kernels"] == 1
    assert r["params"]["use_gpu"] is True


# --------------------------------------------------------------------------- failures

def test_failed_run_raises_one_line_error_quoting_last_error():
    # lp6m/yolov5s_android: the NNAPI delegate fails to prepare, the tool prints "Benchmarking failed."
    with pytest.raises(EdgesegError) as info:
        _parse("android_mi11_nnapi_failed_tf2.4.txt")
    message = str(info.value)
    assert "\n" not in message
    assert "no inference timings" in message
    assert message.endswith("last error: Benchmarking failed.")


def test_failed_run_still_echoes_params():
    params = parse_params(_fixture("android_mi11_nnapi_failed_tf2.4.txt"))
    assert params == {"num_threads": 4, "graph": "/data/local/tmp/yolov5s_int8_640.tflite", "use_nnapi": True}


def test_truncated_log_raises():
    text = _fixture("linux_rb1_gpu_opencl.txt")
    cut = text[: text.index("INFO: Inference timings")]
    with pytest.raises(EdgesegError) as info:
        parse_benchmark_output(cut)
    message = str(info.value)
    assert "\n" not in message
    assert "no inference timings" in message
    # no error line in what is left, so the last line is quoted (its INFO: tag stripped)
    assert message.endswith("last line: count=50 first=119614 curr=115889 min=111842 max=119614 "
                            "avg=115246 std=1329 p5=112107 median=115350 p95=116620")


def test_empty_output_raises():
    with pytest.raises(EdgesegError, match="no output at all"):
        parse_benchmark_output("")


def test_header_comments_are_ignored_but_threads_line_is_not():
    # "#threads used for CPU inference: [4]" is a benchmark_model line, not a header comment.
    params = parse_params("# a header\n#\nSTARTING!\n#threads used for CPU inference: [4]\n")
    assert params == {"num_threads": 4}


# --------------------------------------------------------------------------- delegate lines

def test_delegate_partitions_from_logcat_lines():
    # Verbatim logcat from an Android app, quoted in https://github.com/asus4/tf-lite-unity-sample/pull/214
    # (comment of 2022-05-10): older "Replacing N node(s)" wording, with logcat prefixes.
    logcat = (
        "05-10 14:58:14.911 12439 12461 I tflite  : Created TensorFlow Lite XNNPACK delegate for CPU.\n"
        "05-10 14:58:14.943 12439 12461 I tflite  : Initialized TensorFlow Lite runtime.\n"
        "05-10 14:58:14.957 12439 12461 I tflite  : Replacing 269 node(s) with delegate "
        "(TfLiteXNNPackDelegate) node, yielding 13 partitions.\n"
    )
    d = parse_delegate(logcat)
    assert (d["name"], d["nodes_delegated"], d["nodes_total"], d["partitions"]) == ("XNNPACK", 269, None, 13)


def test_delegate_prefers_created_gpu_over_xnnpack_fallback():
    # Verbatim Android log quoted in https://discuss.ai.google.dev/t/understand-tflite-model-running-on-android-gpu/27507
    log = """Initialized TensorFlow Lite runtime.
Replacing 52 out of 65 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 6 partitions for the whole graph.
Created interpreter.
Created TensorFlow Lite delegate for GPU.
Replacing 29 out of 65 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 3 partitions for the whole graph.
Initialized OpenCL-based API.
Created 1 GPU delegate kernels.
Replacing 25 out of 37 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 2 partitions for the whole graph.
Created interpreter.
"""
    d = parse_delegate(log)
    assert (d["name"], d["nodes_delegated"], d["nodes_total"], d["partitions"]) == ("GPU", 29, 65, 3)
    assert d["gpu_kernels"] == 1


# --------------------------------------------------------------------------- adb commands

def test_build_commands_xnnpack_without_serial():
    cmds = build_commands(model_path="out/lraspp.tflite", binary_path="tools/benchmark_model", serial=None,
                          threads=4, use_gpu=False, use_xnnpack=True, runs=50, warmup=5)
    d = "/data/local/tmp/edgeseg"
    assert cmds == [
        ["adb", "shell", "mkdir", "-p", d],
        ["adb", "push", "tools/benchmark_model", f"{d}/benchmark_model"],
        ["adb", "push", "out/lraspp.tflite", f"{d}/lraspp.tflite"],
        ["adb", "shell", "chmod", "755", f"{d}/benchmark_model"],
        ["adb", "shell", f"{d}/benchmark_model", f"--graph={d}/lraspp.tflite", "--num_threads=4",
         "--use_gpu=false", "--use_xnnpack=true", "--num_runs=50", "--warmup_runs=5"],
    ]


def test_build_commands_gpu_with_serial_and_remote_dir():
    cmds = build_commands(model_path="m.tflite", binary_path="/opt/android_aarch64_benchmark_model",
                          serial="R58M123ABC", threads=1, use_gpu=True, use_xnnpack=False, runs=10, warmup=2,
                          remote_dir="/data/local/tmp/x")
    assert all(c[:3] == ["adb", "-s", "R58M123ABC"] for c in cmds)
    assert cmds[1][3:] == ["push", "/opt/android_aarch64_benchmark_model",
                           "/data/local/tmp/x/android_aarch64_benchmark_model"]
    assert cmds[-1][3:] == ["shell", "/data/local/tmp/x/android_aarch64_benchmark_model",
                            "--graph=/data/local/tmp/x/m.tflite", "--num_threads=1", "--use_gpu=true",
                            "--use_xnnpack=false", "--num_runs=10", "--warmup_runs=2"]


def test_build_commands_quotes_shell_words():
    cmds = build_commands(model_path="my model.tflite", binary_path="benchmark_model", serial=None,
                          threads=2, use_gpu=False, use_xnnpack=True, runs=5, warmup=1)
    assert cmds[2][-1] == "/data/local/tmp/edgeseg/my model.tflite"  # push: argv, no shell
    assert cmds[-1][3] == "'--graph=/data/local/tmp/edgeseg/my model.tflite'"  # shell: quoted


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"runs": 0}, {"warmup": -1}])
def test_build_commands_rejects_bad_counts(kwargs):
    args = dict(model_path="m.tflite", binary_path="benchmark_model", serial=None, threads=4,
                use_gpu=False, use_xnnpack=True, runs=50, warmup=5) | kwargs
    with pytest.raises(EdgesegError):
        build_commands(**args)


# --------------------------------------------------------------------------- adb checks

def test_check_adb_without_adb_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgesegError) as info:
        check_adb(None)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("adb not found on PATH: install Android platform-tools")


def test_pick_device_messages():
    devices = {"emulator-5554": "device", "R58M123ABC": "unauthorized"}
    assert android._pick_device(devices, None) == "emulator-5554"
    with pytest.raises(EdgesegError, match=r"no Android device with serial XYZ connected; `adb devices` shows: "
                                           r"emulator-5554 \(device\), R58M123ABC \(unauthorized\)"):
        android._pick_device(devices, "XYZ")
    with pytest.raises(EdgesegError, match="R58M123ABC is unauthorized"):
        android._pick_device(devices, "R58M123ABC")
    with pytest.raises(EdgesegError, match="no Android device connected"):
        android._pick_device({}, None)
    with pytest.raises(EdgesegError, match="several Android devices"):
        android._pick_device({"a": "device", "b": "device"}, None)


# --------------------------------------------------------------------------- results table

def test_phone_results_fill_the_bench_table_and_report(tmp_path):
    """A phone run has no p90 and may lack memory: the table and the report show '-' there, not a crash."""
    from edgeseg.bench.harness import android_result
    from edgeseg.bench.report import table_rows, write_report
    from edgeseg.manifest import Artifact

    art = Artifact("tflite", "fp32", "m-fp32.tflite", 2_600_000, "0" * 64, {}, {})
    cpu = android_result(art, _parse("android_mi11_cpu_tf2.4.txt"), threads=4, use_gpu=False, device="Mi 11")
    gpu = android_result(art, _parse("android_gpu_opencl_tf2.3.txt"), threads=1, use_gpu=True, device="Mi 11")
    assert gpu["peak_rss_mb"] is None and cpu["latency_ms"]["p50"] == pytest.approx(249.684)
    doc = {"host": {"cpu": "x", "cores": 8, "device": "Mi 11"}, "calibration": {"workload": "none on device", "p50_ms": None},
           "results": [cpu, gpu]}
    rows = table_rows(doc)
    assert rows[0][:6] == ["m-fp32.tflite", "android-xnnpack", "4", "249.68", "-", "249.684"]
    assert rows[1][1] == "android-gpu" and rows[1][8] == "-"  # no peak memory in that log
    write_report(doc, tmp_path / "rep", None)
    assert "android-gpu" in (tmp_path / "rep" / "report.md").read_text()
