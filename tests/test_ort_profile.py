"""benchmarks/ort_profile.py: ONNX Runtime's own profiler, fp32 against int8, on the session's tiny export."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_profiles_the_fp32_and_int8_onnx_per_op_type_and_node(shared_export, tmp_path):
    out = tmp_path / "prof"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "ort_profile.py"), str(shared_export.dir), str(out),
                        "--runs", "3", "--warmup", "1", "--top", "4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.with_suffix(".json").read_text())
    fp32, int8 = doc["fp32"], doc["int8"]
    assert "Conv" in fp32["ops"] and "QLinearConv" not in fp32["ops"]
    assert "QLinearConv" in int8["ops"]  # ONNX Runtime fused the QDQ convolutions into integer ones
    for res in (fp32, int8):
        assert abs(sum(res["ops"].values()) - res["total_us"]) < 1e-6 * res["total_us"] + 1e-9
        times = [n["us"] for n in res["nodes"]]
        assert times == sorted(times, reverse=True) and times[0] > 0
    md = out.with_suffix(".md").read_text()
    assert "| QLinearConv | 0 |" in md and md.count("Slowest") == 2


def test_an_export_without_onnx_files_is_one_line_and_exit_2(executorch_export, tmp_path):
    r = subprocess.run([sys.executable, str(BENCHMARKS / "ort_profile.py"), str(executorch_export), str(tmp_path / "p")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "no onnx:fp32 artifact" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
