"""Bench harness and gate: JSON schema, planted slowdown and parity drop fail, unchanged re-run passes,
rows that cannot be checked fail, bad options or unusable baselines are refused before any timing, and an
export directory moved away from its checkpoint is still checked in full from the reference it stores."""
from __future__ import annotations

import hashlib
import json
import shutil
import time

import numpy as np
import pytest

from edgeseg.bench.gate import SCHEMA_VERSION, check_baseline, compare, over_limit, parity_failures
from edgeseg.bench.latency_reference import open_workload
from edgeseg.bench.latency import time_interleaved
from edgeseg.errors import EdgesegError
from edgeseg.manifest import MANIFEST_NAME, file_digest, read_manifest
from edgeseg.runtime import loader

from conftest import assert_refused, copy_export, invoke_cli

RESULT_KEYS = {"artifact", "format", "precision", "runtime", "threads", "runs", "latency_ms", "normalized_p50", "load_ms",
               "peak_rss_mb", "bytes"}


@pytest.fixture(scope="module")
def onnx_dir(shared_export, tmp_path_factory):
    """The tiny model's ONNX fp32 + fp16 export (copied from the session's export)."""
    return copy_export(shared_export.dir, tmp_path_factory.mktemp("bench") / "exp", keep=[("onnx", "fp32"), ("onnx", "fp16")])


@pytest.fixture(scope="module")
def baseline(onnx_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "baseline.json"
    r = invoke_cli("bench", onnx_dir, "--threads", "1", "--runs", "30", "--warmup", "3", "--parity-images", "2",
                   "--json", path, "--report", path.parent / "report")
    assert r.exit_code == 0, r.output
    return path


def test_bench_json_matches_design_schema(baseline, tiny_checkpoint):
    doc = json.loads(baseline.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION == 2 and {"cpu", "cores", "tools"} <= set(doc["host"])
    assert doc["model"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert doc["model"]["name"] == "tiny" and doc["model"]["source"] == "checkpoint"
    assert doc["calibration"]["p50_ms"] > 0
    fmts = {(r["format"], r["precision"]) for r in doc["results"]}
    assert fmts == {("pytorch", "fp32"), ("onnx", "fp32"), ("onnx", "fp16")}
    for r in doc["results"]:
        assert RESULT_KEYS <= set(r)
        assert set(r["latency_ms"]) == {"p50", "p90", "p99", "mean", "min"}
        assert r["latency_ms"]["min"] <= r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        # median of per-run ratios: close to, not equal to, the ratio of the medians
        assert r["normalized_p50"] == pytest.approx(r["latency_ms"]["p50"] / r["calibration_p50"], rel=0.5)
        runtime = "pytorch eager" if r["format"] == "pytorch" else "onnxruntime"
        assert r["calibration_workload"].endswith(f"fp32 ({runtime})")
        if r["format"] == "onnx":
            assert r["parity"]["passed"] is True and "speedup_vs_pytorch" in r
            assert "skin_tone" in r["parity"]["slices"]  # built-in set: slices out of the box


def test_report_has_table_and_charts(baseline):
    rep = baseline.parent / "report"
    md = (rep / "report.md").read_text()
    assert "normalized p50" in md and "tiny-fp16.onnx" in md
    for png in ("latency_accuracy.png", "thread_scaling.png", "samples.png"):
        assert (rep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table>" in (rep / "report.html").read_text()


# The real-runner tests check the plumbing (real runners, real timing, the gate's verdict) with a
# limit far above timing noise on a busy machine and a planted slowdown far above the limit; the
# product limit (1.15) is tested with injected timings below, and benchmarks/flap_check.py measures
# how rarely an unchanged run crosses 1.15 on this machine.
E2E_LIMIT = "2.0"
PLANTED = 3.0  # a planted slowdown: every call takes 4x as long


def test_unchanged_rerun_passes_the_gate(onnx_dir, baseline, cli):
    r = cli("bench", onnx_dir, "--threads", "1", "--runs", "30", "--warmup", "3", "--parity-images", "2",
            "--baseline", baseline, "--max-slowdown", E2E_LIMIT)
    assert r.exit_code == 0, r.output
    assert "gate passed" in r.stdout


class _Slowed:
    """A real runner whose every call takes 4x as long (sleeps PLANTED times its own run time)."""

    def __init__(self, inner):
        self.inner, self.runtime, self.threads, self.latency_note = inner, inner.runtime, inner.threads, inner.latency_note

    def run(self, images):
        t0 = time.perf_counter()
        out = self.inner.run(images)
        time.sleep(PLANTED * (time.perf_counter() - t0))
        return out

    def close(self):
        self.inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_planted_slowdown_fails_the_gate(onnx_dir, baseline, cli, monkeypatch):
    real = loader.runner_for_artifact
    monkeypatch.setattr("edgeseg.bench.harness.runner_for_artifact", lambda a, m, t=None: _Slowed(real(a, m, t)))
    res = cli("bench", onnx_dir, "--threads", "1", "--runs", "30", "--warmup", "3", "--parity-images", "2",
              "--baseline", baseline, "--max-slowdown", E2E_LIMIT)
    assert res.exit_code == 1, res.output
    assert "SLOWER" in res.output
    assert "re-timing tiny-fp32.onnx x1" in res.output  # a lasting slowdown survives the re-timing


def test_passing_burst_of_load_is_re_timed_not_failed(onnx_dir, baseline, cli, monkeypatch):
    """The first timing of one file is 4x slow (a burst of load), its re-timing is not: the gate passes
    with --confirm (the default) and fails with --no-confirm."""
    real = loader.runner_for_artifact

    def burst(loads):
        def make(a, m, t=None):
            runner = real(a, m, t)
            if a.precision == "fp32":
                loads.append(a.path)
                if len(loads) <= 3:  # the 3 sessions of the first timing (--sessions 3)
                    return _Slowed(runner)
            return runner
        return make

    monkeypatch.setattr("edgeseg.bench.harness.runner_for_artifact", burst([]))
    args = ("bench", onnx_dir, "--threads", "1", "--runs", "30", "--warmup", "3", "--parity-images", "2",
            "--sessions", "3", "--baseline", baseline, "--max-slowdown", E2E_LIMIT)
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert "re-timing tiny-fp32.onnx x1" in res.output and "ok (re-timed)" in res.output
    monkeypatch.setattr("edgeseg.bench.harness.runner_for_artifact", burst([]))
    res = cli(*args, "--no-confirm")
    assert res.exit_code == 1, res.output
    assert "SLOWER" in res.output and "re-timing" not in res.output


def test_gate_fails_only_when_the_re_timing_is_over_the_limit_too(baseline):
    doc = json.loads(baseline.read_text())
    slower = json.loads(baseline.read_text())
    target = next(r for r in slower["results"] if r["format"] == "onnx" and r["precision"] == "fp32")
    target["normalized_p50"] *= 1.30
    assert over_limit(doc, slower["results"], 1.15) == [target]
    target["confirmation"] = {"normalized_p50": target["normalized_p50"] / 1.30 * 1.05}
    gate = compare(doc, slower, 1.15)
    assert gate.passed
    assert [(r["ratio"], r["retimed_ratio"], r["status"]) for r in gate.rows if r["result"] is target] == [
        (1.3, 1.05, "ok (re-timed)")]
    target["confirmation"]["normalized_p50"] = target["normalized_p50"] / 1.30 * 1.25
    gate = compare(doc, slower, 1.15)
    assert gate.failures == ["onnx/fp32/onnxruntime/1t: normalized p50 1.30x the baseline, re-timed 1.25x (limit 1.15x)"]


def test_planted_30_percent_slowdown_fails_at_default_limit(baseline):
    doc = json.loads(baseline.read_text())
    slower = json.loads(baseline.read_text())
    target = next(r for r in slower["results"] if r["format"] == "onnx" and r["precision"] == "fp32")
    target["normalized_p50"] *= 1.30
    gate = compare(doc, slower, 1.15)
    assert [row["status"] for row in gate.rows if row["key"] == "onnx/fp32/onnxruntime/1t"] == ["SLOWER"]
    assert len(gate.failures) == 1


def test_parity_drop_fails_the_gate(baseline):
    doc = json.loads(baseline.read_text())
    dropped = json.loads(baseline.read_text())
    for r in dropped["results"]:
        if r["format"] == "onnx" and r["precision"] == "fp16":
            r["parity"].update(agreement_miou=0.9, passed=False)
    gate = compare(doc, dropped, 1.15)
    assert not gate.passed and any("parity" in f for f in gate.failures)
    assert compare(doc, doc, 1.15).passed


def test_missing_artifact_fails_the_gate(baseline):
    doc = json.loads(baseline.read_text())
    fewer = {**doc, "results": [r for r in doc["results"] if r["precision"] != "fp16"]}
    gate = compare(doc, fewer, 1.15)
    assert [row["status"] for row in gate.rows if row["key"].startswith("onnx/fp16")] == ["MISSING"]


def test_calibration_interleaving_times_both():
    class Sleepy:
        runtime, threads = "sleep", 1

        def run(self, images):
            time.sleep(0.002)
            return np.zeros((1, 2, 4, 4), np.float32)

    t = time_interleaved(Sleepy(), np.zeros((4, 4, 3), np.uint8), open_workload("pytorch", "fp32", 1), runs=5, warmup=1)
    assert len(t.samples_ms) == len(t.calibration_ms) == 5
    assert t.latency["p50"] >= 2.0 and t.calibration["p50"] > 0
    ratios = sorted(m / c for m, c in zip(t.samples_ms, t.calibration_ms))
    assert t.normalized_p50 == pytest.approx(ratios[2], rel=1e-4)


def with_two_threads(doc: dict) -> dict:
    """``doc`` with every result repeated at 2 threads."""
    return {**doc, "results": doc["results"] + [{**r, "threads": 2} for r in doc["results"]]}


def test_gate_threads_limits_the_latency_check(baseline):
    doc = with_two_threads(json.loads(baseline.read_text()))
    slower = with_two_threads(json.loads(baseline.read_text()))
    for r in slower["results"]:
        r["normalized_p50"] *= 1.30
    assert len(compare(doc, slower, 1.15).failures) == 6
    gate = compare(doc, slower, 1.15, latency_threads={2})
    assert len(gate.failures) == 3 and all("/2t:" in f for f in gate.failures)
    assert {row["status"] for row in gate.rows if row["key"].endswith("/1t")} == {"info"}


# ---------------------------------------------------------------------------------------------
# A row that cannot be checked fails the gate


def test_result_no_longer_timed_fails_the_gate(baseline):
    doc = json.loads(baseline.read_text())
    now = json.loads(baseline.read_text())
    target = next(r for r in now["results"] if r["precision"] == "fp16")
    del target["normalized_p50"]
    target["latency_skipped"] = "not timed here"
    gate = compare(doc, now, 1.15)
    assert [row["status"] for row in gate.rows if row["result"] is target] == ["UNCHECKED"]
    assert gate.failures == ["onnx/fp16/onnxruntime/1t: latency cannot be compared (not timed here)"]


def test_result_without_parity_fails_the_gate(baseline):
    doc = json.loads(baseline.read_text())
    now = json.loads(baseline.read_text())
    target = next(r for r in now["results"] if r["precision"] == "fp16")
    del target["parity"]
    gate = compare(doc, now, 1.15)
    assert [row["status"] for row in gate.rows if row["result"] is target] == ["UNCHECKED"]
    assert len(gate.failures) == 1 and "parity was checked in the baseline but not in this run" in gate.failures[0]


def test_result_not_in_the_baseline_fails_the_gate(baseline):
    doc = json.loads(baseline.read_text())
    fewer = {**doc, "results": [r for r in doc["results"] if r["precision"] != "fp16"]}
    gate = compare(fewer, doc, 1.15)
    assert [row["status"] for row in gate.rows if row["key"].startswith("onnx/fp16")] == ["NEW"]
    assert gate.failures == ["onnx/fp16/onnxruntime/1t: in this run but not in the baseline; "
                             "re-record the baseline with --update-baseline"]


@pytest.mark.parametrize("limit", [float("nan"), float("inf"), 1.0, 0.0, -1.0])
def test_compare_refuses_a_limit_that_is_not_a_ratio_above_1(baseline, limit):
    doc = json.loads(baseline.read_text())
    with pytest.raises(EdgesegError, match="--max-slowdown must be a finite ratio above 1"):
        compare(doc, doc, limit)


# ---------------------------------------------------------------------------------------------
# Refused before any timing: exit 2, one line, nothing written


@pytest.fixture
def no_timing(monkeypatch):
    """Timing starts in run_bench (host) or run_android (phone): reaching either fails the test."""
    def tripwire(*args, **kwargs):
        raise AssertionError("timing started")
    monkeypatch.setattr("edgeseg.bench.harness.run_bench", tripwire)
    monkeypatch.setattr("edgeseg.bench.harness.run_android", tripwire)


def bench_args(export_dir, out, *extra) -> tuple:
    """A quick bench writing --json and --report under ``out``."""
    return ("bench", export_dir, "--threads", "1", "--runs", "3", "--sessions", "1", "--parity-images", "2",
            "--json", out / "bench.json", "--report", out / "report", *extra)


def test_tripwire_catches_timing(cli, onnx_dir, baseline, tmp_path, no_timing):
    """Control: valid options reach the timing (so the refusals below happen before it)."""
    with pytest.raises(AssertionError, match="timing started"):
        cli(*bench_args(onnx_dir, tmp_path, "--baseline", baseline))


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf", "0", "-1", "1", "1.0"])
def test_bad_max_slowdown_is_refused_before_timing(cli, onnx_dir, baseline, tmp_path, no_timing, limit):
    assert_refused(cli, *bench_args(onnx_dir, tmp_path, "--baseline", baseline, "--max-slowdown", limit),
                   watch=[tmp_path, baseline], match="--max-slowdown must be a finite ratio above 1")


@pytest.mark.parametrize("threads, gate_threads, match", [
    ("1", "4", "--gate-threads 4 not in --threads 1"),
    ("1", "1,2", "--gate-threads 2 not in --threads 1"),
    ("", None, "--threads is empty"),
    ("0", None, "--threads 0: each thread count must be 1 or more and given once"),
    ("1,1", None, "--threads 1,1: each thread count must be 1 or more and given once"),
    ("1,2", None, "recorded at --threads 1, this run times 1,2"),
])
def test_bad_threads_are_refused_before_timing(cli, onnx_dir, baseline, tmp_path, no_timing, threads, gate_threads, match):
    args = bench_args(onnx_dir, tmp_path, "--baseline", baseline, "--threads", threads,
                      *(("--gate-threads", gate_threads) if gate_threads else ()))
    assert_refused(cli, *args, watch=[tmp_path, baseline], match=match)


def test_gate_threads_without_timed_baseline_results_are_refused(baseline):
    doc = with_two_threads(json.loads(baseline.read_text()))
    for r in doc["results"]:
        if r["threads"] == 2:
            r["latency_skipped"] = r.pop("normalized_p50") and "not timed"
    with pytest.raises(EdgesegError, match=f"--gate-threads 2: {baseline} has no timed result at that thread count"):
        check_baseline(doc, baseline, model=doc["model"], threads=(1, 2), latency_threads={2})


def _drop(key):
    def edit(doc):
        del doc["results"][1][key]
    return edit


def _set(key, value, row=1):
    def edit(doc):
        doc["results"][row][key] = value
    return edit


BAD_BASELINES = {
    "schema 99": (lambda d: d.update(schema_version=99), "schema_version 99, this edgeseg reads 2"),
    "schema 1, no model": (lambda d: (d.update(schema_version=1), d.pop("model")), "schema_version 1, this edgeseg reads 2"),
    "no model": (lambda d: d.pop("model"), "records no model identity"),
    "another network": (lambda d: d["model"].update(name="other", sha256="0" * 64, network="1" * 64),
                        "a baseline of another network (architecture, options, input, classes or normalization): 'other'"),
    "other weights, no network recorded": (lambda d: (d["model"].update(name="other", sha256="0" * 64),
                                                      d["model"].pop("network")), "a baseline of another model: 'other'"),
    "results not a list": (lambda d: d.update(results={}), "not an edgeseg bench JSON (no results list)"),
    "no results": (lambda d: d.update(results=[]), "no results to gate against"),
    "row not an object": (lambda d: d["results"].__setitem__(1, "fast"), "result 1 is not an object"),
    "row without format": (_drop("format"), "result 1 has no format"),
    "threads as text": (_set("threads", "1"), "result 1 has no thread count"),
    "p50 as text": (_set("normalized_p50", "fast"), "result 1 has normalized_p50 'fast', not a positive number"),
    "p50 NaN": (_set("normalized_p50", float("nan")), "result 1 has normalized_p50 nan, not a positive number"),
    "p50 zero": (_set("normalized_p50", 0), "result 1 has normalized_p50 0, not a positive number"),
    "untimed without reason": (_drop("normalized_p50"), "result 1 has neither normalized_p50 nor latency_skipped"),
    "parity as text": (_set("parity", "ok"), "result 1 has a parity that is not an object"),
    "skipped row": (_set("skipped", "onnxruntime is not installed"), "result 1 was skipped when the baseline was recorded"),
    "repeated row": (lambda d: d["results"].append(dict(d["results"][1])), "repeats an earlier result"),
}


@pytest.mark.parametrize("name", list(BAD_BASELINES))
def test_unusable_baseline_is_refused_before_timing(cli, onnx_dir, baseline, tmp_path, no_timing, name):
    edit, match = BAD_BASELINES[name]
    doc = json.loads(baseline.read_text())
    edit(doc)
    bad = tmp_path / "baseline" / "bad.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(doc))
    line = assert_refused(cli, *bench_args(onnx_dir, tmp_path / "out", "--baseline", bad), watch=[tmp_path], match=match)
    assert str(bad) in line


def test_baseline_of_another_real_model_is_refused(cli, baseline, tmp_path, no_timing):
    """The packaged calibration export (another model, real files) against the tiny model's baseline."""
    from edgeseg.bench.latency_reference import ASSETS

    other = tmp_path / "other"
    shutil.copytree(ASSETS, other)
    line = assert_refused(cli, *bench_args(other, tmp_path / "out", "--baseline", baseline), watch=[tmp_path, baseline],
                          match="a baseline of another network (architecture, options, input, classes or normalization): 'tiny'")
    assert "this run benchmarks 'edgeseg-calibration-v1'" in line


def test_a_retrained_checkpoint_of_the_same_network_is_gated_against_the_baseline(onnx_dir, baseline, cli, tmp_path):
    """Other weights, same network (a PR that retrains the model): latency is compared, with a note."""
    doc = json.loads(baseline.read_text())
    assert len(doc["model"]["network"]) == 64
    doc["model"].update(sha256="0" * 64)  # the baseline's checkpoint was another one of the same network
    old = tmp_path / "before-retraining.json"
    old.write_text(json.dumps(doc))
    # a limit far above any timing noise: this checks the baseline is accepted, not the machine's speed
    r = cli("bench", onnx_dir, "--threads", "1", "--runs", "3", "--warmup", "1", "--sessions", "1",
            "--parity-images", "2", "--baseline", old, "--max-slowdown", "1000")
    assert r.exit_code == 0, r.output
    assert "note: the baseline was recorded from other weights of this network (checkpoint sha256 000000000000..." in r.output
    assert "gate passed" in r.output and "ok" in r.output


@pytest.mark.parametrize("option", ["--json", "--report", "--baseline"])
def test_output_under_a_file_is_refused_before_timing(cli, onnx_dir, tmp_path, no_timing, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    outputs = {"--json": tmp_path / "bench.json", "--report": tmp_path / "report", "--baseline": tmp_path / "base.json"}
    outputs[option] = blocker / "inside"
    args = [a for item in outputs.items() for a in item]
    assert_refused(cli, "bench", onnx_dir, "--threads", "1", *args, "--update-baseline", watch=[tmp_path],
                   match=f"{option} {blocker / 'inside'}: {blocker} is a file")


def test_report_onto_a_file_is_refused_before_timing(cli, onnx_dir, tmp_path, no_timing):
    report = tmp_path / "report"
    report.write_text("a file")
    line = assert_refused(cli, *bench_args(onnx_dir, tmp_path), watch=[tmp_path], match="is a file")
    assert str(report) in line and "--report" in line


def test_report_never_replaces_a_users_files_and_is_refused_before_timing(cli, tmp_path, no_timing):
    """--report into a folder holding the user's report.md / report.html: refused before any timing (or
    before the files are even opened: the output checks come first), both kept."""
    from edgeseg.bench.latency_reference import ASSETS

    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "report.md").write_text("# mine\n")
    (docs / "report.html").write_text("<html>mine</html>\n")
    line = assert_refused(cli, "bench", ASSETS, "--threads", "1", "--runs", "3", "--sessions", "1", "--report", docs,
                          watch=[tmp_path], match="holds report.md, report.html, not written by edgeseg bench")
    assert str(docs) in line


@pytest.mark.parametrize("target", ["manifest.json", "tiny-fp32.onnx", "checkpoint"])
def test_json_outputs_never_replace_the_commands_inputs(cli, onnx_dir, tiny_checkpoint, tmp_path, no_timing, target):
    import shutil

    export = tmp_path / "export"
    shutil.copytree(onnx_dir, export)
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    victim = ckpt if target == "checkpoint" else export / target
    for option in (("--json", victim), ("--baseline", victim, "--update-baseline")):
        assert_refused(cli, "bench", export, "--threads", "1", *option, watch=[tmp_path],
                       match="is not a JSON report edgeseg wrote")


# ---------------------------------------------------------------------------------------------
# int8/fp32 per runtime: same-run ratio of raw p50s


@pytest.fixture(scope="module")
def int8_bench(shared_export, tmp_path_factory):
    """The tiny model's fp32 and int8 ONNX and TFLite files (copied from the session's export), benched
    once (--json, --report, stdout)."""
    root = tmp_path_factory.mktemp("int8bench")
    copy_export(shared_export.dir, root / "exp", keep=[(f, p) for f in ("onnx", "tflite") for p in ("fp32", "int8")])
    r = invoke_cli("bench", root / "exp", "--threads", "1", "--runs", "3", "--warmup", "1", "--sessions", "1",
                   "--parity-images", "2", "--json", root / "bench.json", "--report", root / "report")
    assert r.exit_code == 0, r.output
    return root, json.loads((root / "bench.json").read_text()), r.stdout


def test_bench_pairs_each_runtimes_int8_file_with_its_fp32_file(int8_bench):
    _, doc, _ = int8_bench
    timed = {r["artifact"]: r for r in doc["results"]}
    pairs = doc["int8_vs_fp32"]["pairs"]
    assert [(p["format"], p["runtime"], p["threads"], p["fp32"], p["int8"]) for p in pairs] == [
        ("onnx", "onnxruntime", 1, "tiny-fp32.onnx", "tiny-int8.onnx"), ("tflite", "litert", 1, "tiny-fp32.tflite", "tiny-int8.tflite")]
    for p in pairs:
        fp32, int8 = timed[p["fp32"]]["latency_ms"]["p50"], timed[p["int8"]]["latency_ms"]["p50"]
        assert (p["fp32_p50_ms"], p["int8_p50_ms"]) == (fp32, int8)
        assert p["ratio"] == round(int8 / fp32, 3)
    assert "latency_ms.p50" in doc["int8_vs_fp32"]["statistic"] and doc["schema_version"] == SCHEMA_VERSION


def test_int8_ratio_is_shown_on_the_int8_rows_of_table_and_reports(int8_bench):
    root, doc, stdout = int8_bench
    from edgeseg.bench.report import COLUMNS, table_rows

    col = COLUMNS.index("int8/fp32 p50")
    ratios = {p["int8"]: f"{p['ratio']:.2f}x" for p in doc["int8_vs_fp32"]["pairs"]}
    shown = {row[0]: row[col] for row in table_rows(doc)}
    assert shown == {"pytorch-fp32": "-", "tiny-fp32.onnx": "-", "tiny-int8.onnx": ratios["tiny-int8.onnx"],
                     "tiny-fp32.tflite": "-", "tiny-int8.tflite": ratios["tiny-int8.tflite"]}
    md = [[c.strip() for c in line.strip("|").split("|")] for line in (root / "report" / "report.md").read_text().splitlines()
          if line.startswith("| ")]
    assert md[0] == COLUMNS
    assert {row[0]: row[col] for row in md[1:]} == shown
    summary = "int8/fp32 p50 (same run, raw ms): " + "; ".join(f"{r} 1t {ratios[f]}" for r, f in (
        ("onnxruntime", "tiny-int8.onnx"), ("litert", "tiny-int8.tflite")))
    assert summary in stdout.splitlines() and summary in (root / "report" / "report.md").read_text()
    assert "int8/fp32 p50" in (root / "report" / "report.html").read_text()


def test_int8_ratio_uses_raw_p50s_of_the_same_runtime_and_threads(int8_bench):
    """Injected timings: the ratio is int8 p50 / fp32 p50 (not normalized p50s, which use different
    calibration workloads), per (format, runtime, threads); untimed and unpaired results have none."""
    from edgeseg.bench.harness import int8_vs_fp32

    _, doc, _ = int8_bench
    results = [json.loads(json.dumps(r)) for r in doc["results"]]
    results += [{**json.loads(json.dumps(r)), "threads": 2} for r in results]
    for r in results:
        lat = {("fp32", 1): 4.0, ("int8", 1): 3.0, ("fp32", 2): 2.0, ("int8", 2): 2.5}.get((r["precision"], r["threads"]))
        if lat is not None:
            r["latency_ms"]["p50"], r["normalized_p50"] = lat, 1.0 / lat
    untimed = next(r for r in results if r["artifact"] == "tiny-int8.tflite" and r["threads"] == 2)
    del untimed["latency_ms"]
    untimed["latency_skipped"] = "not timed here"
    ratios = {(p["format"], p["threads"]): p["ratio"] for p in int8_vs_fp32(results)["pairs"]}
    assert ratios == {("onnx", 1): 0.75, ("tflite", 1): 0.75, ("onnx", 2): 1.25}
    no_int8 = [r for r in results if r["precision"] != "int8"]
    assert int8_vs_fp32(no_int8)["pairs"] == []


def test_baseline_written_before_int8_ratios_still_gates(int8_bench, cli, tmp_path):
    """A schema-2 bench JSON without ``int8_vs_fp32`` (written before it existed) is read, shown and gated."""
    from edgeseg.bench.report import COLUMNS, table_rows

    root, doc, _ = int8_bench
    old = {k: v for k, v in doc.items() if k != "int8_vs_fp32"}
    assert {row[COLUMNS.index("int8/fp32 p50")] for row in table_rows(old)} == {"-"}
    assert compare(old, doc, 1.15).passed
    path = tmp_path / "old-baseline.json"
    path.write_text(json.dumps(old))
    # a limit far above any timing noise: this checks the old file is accepted, not the machine's speed
    res = cli("bench", root / "exp", "--threads", "1", "--runs", "3", "--warmup", "1", "--sessions", "1",
              "--parity-images", "2", "--baseline", path, "--max-slowdown", "1000")
    assert res.exit_code == 0, res.output
    assert "gate passed" in res.output


# ---------------------------------------------------------------------------------------------
# Self-contained export directories: parity from the stored reference, no checkpoint, any directory


@pytest.fixture(scope="module")
def moved_export(tiny_checkpoint, tmp_path_factory):
    """Exported in one working directory from a relative checkpoint path, then moved (as onto a CI
    runner) and that working directory, checkpoint included, deleted: only the export directory is left."""
    root = tmp_path_factory.mktemp("moved")
    work = root / "work"
    (work / "ckpt").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, work / "ckpt" / "best.pt")
    r = invoke_cli("export", "ckpt/best.pt", "--out", "exp", "--formats", "onnx", "--precisions", "fp32,fp16",
                   "--parity-images", "2", cwd=work)
    assert r.exit_code == 0, r.output
    (root / "ci").mkdir()
    shutil.move(work / "exp", root / "ci" / "exp")
    shutil.rmtree(work)
    return root / "ci" / "exp"


def bench_from(cwd, export_dir, *extra):
    """A quick ``edgeseg bench`` of ``export_dir`` run from ``cwd`` (in-process)."""
    cwd.mkdir(exist_ok=True)
    return invoke_cli("bench", export_dir, "--threads", "1", "--runs", "3", "--sessions", "1", "--warmup", "0",
                      "--json", cwd / "bench.json", *extra, cwd=cwd)


@pytest.fixture(scope="module")
def moved_bench(moved_export, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("elsewhere")
    r = bench_from(cwd, moved_export)
    return r, json.loads((cwd / "bench.json").read_text())


def failed_line(cli, monkeypatch, cwd, export_dir) -> str:
    """Bench ``export_dir`` in-process from ``cwd`` (writing ``cwd/bench.json``); the one ``FAILED:`` line of
    its gate failure (exit 1), with no traceback and no ``error:`` line."""
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    r = cli("bench", export_dir, "--threads", "1", "--runs", "3", "--sessions", "1", "--warmup", "0", "--json", "bench.json")
    assert r.exit_code == 1, r.output[-3000:]
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("FAILED", "error"))]
    assert len(lines) == 1 and lines[0].startswith("FAILED: "), r.stderr
    return lines[0]


def test_manifest_lists_the_stored_reference(moved_export):
    entry = read_manifest(moved_export).parity_reference
    assert (entry["bytes"], entry["sha256"]) == file_digest(moved_export / entry["path"])
    assert entry["path"] == "parity-reference.npz" and entry["images"] == 2 and entry["labels"] is True
    assert entry["logits"] == "float16" and entry["stress_images"] == 2 * 2 + 2  # 2 corruptions each + 1 real photo each
    assert entry["thresholds"]["fp16"] == 0.995 and entry["stress_gated"] is True  # the default


def test_moved_export_is_checked_in_full_without_its_checkpoint(moved_export, moved_bench):
    """Every file's parity comes from the stored reference (same numbers as at export); only the PyTorch
    timing row, which needs the model itself, is skipped, saying why; the gate passes."""
    r, doc = moved_bench
    assert r.exit_code == 0, r.output[-3000:]
    rows = {row["artifact"]: row for row in doc["results"]}
    checkpoint = moved_export.parent.parent / "work" / "ckpt" / "best.pt"  # recorded absolute, then deleted
    assert rows["pytorch-fp32"]["skipped"].startswith(f"not timed: its checkpoint {checkpoint} (sha256 ")
    assert "parity uses the stored reference" in rows["pytorch-fp32"]["skipped"]
    arts = read_manifest(moved_export).artifacts
    assert set(rows) == {"pytorch-fp32"} | {a.path for a in arts}
    for art in arts:
        parity = rows[art.path]["parity"]
        assert parity["passed"] is True and parity["images"] == 2 and parity["reference_logits"] == "float16"
        assert parity["agreement_miou"] == pytest.approx(art.parity["agreement_miou"], abs=2e-3)
        assert parity["gt_miou"] == pytest.approx(art.parity["gt_miou"], abs=2e-3)
        assert parity["stress"]["images"] == 2 * 2 + 2 and "skin_tone" in parity["slices"]
    assert doc["parity_data"] == "built-in synthetic portrait eval set" and parity_failures(doc["results"]) == []


def test_baseline_recorded_beside_the_checkpoint_gates_the_moved_export(baseline, moved_bench):
    """The baseline's PyTorch rows (timed where the checkpoint was) are shown as not timed, not failed;
    the exported files are gated as usual (a limit far above timing noise: this checks the matching)."""
    _, doc = moved_bench
    gate = compare(json.loads(baseline.read_text()), doc, 1000.0)
    assert gate.passed, gate.failures
    assert {row["key"]: row["status"] for row in gate.rows} == {
        "pytorch/fp32/pytorch/1t": "not timed", "onnx/fp32/onnxruntime/1t": "ok", "onnx/fp16/onnxruntime/1t": "ok"}


def test_tampered_reference_fails_the_gate(cli, moved_export, tmp_path, monkeypatch):
    export = tmp_path / "exp"
    shutil.copytree(moved_export, export)
    data = bytearray((export / "parity-reference.npz").read_bytes())
    data[len(data) // 2] ^= 1
    (export / "parity-reference.npz").write_bytes(bytes(data))
    line = failed_line(cli, monkeypatch, tmp_path / "cwd", export)
    assert line.startswith("FAILED: tiny-fp32.onnx, tiny-fp16.onnx: parity not checked: ")
    assert f"{export / 'parity-reference.npz'}: sha256" in line and "does not match" in line
    doc = json.loads((tmp_path / "cwd" / "bench.json").read_text())  # the files were still timed
    assert all("latency_ms" in row and row["parity"]["passed"] is None for row in doc["results"] if "parity" in row)


def test_export_without_a_stored_reference_fails_the_gate_naming_the_fix(cli, moved_export, tmp_path, monkeypatch):
    """An export directory written before the reference was stored: its files cannot be checked."""
    export = tmp_path / "old"
    shutil.copytree(moved_export, export)
    raw = json.loads((export / MANIFEST_NAME).read_text())
    (export / raw.pop("parity_reference")["path"]).unlink()
    (export / MANIFEST_NAME).write_text(json.dumps(raw))
    line = failed_line(cli, monkeypatch, tmp_path / "cwd", export)
    assert line == (f"FAILED: tiny-fp32.onnx, tiny-fp16.onnx: parity not checked: {export / MANIFEST_NAME} lists no "
                    f"stored parity reference (the export predates it); re-export into {export} with this edgeseg to "
                    "store one")


def test_data_without_the_checkpoint_is_refused_before_timing(cli, moved_export, tmp_path, no_timing):
    line = assert_refused(cli, "bench", moved_export, "--threads", "1", "--data", tmp_path, watch=[moved_export, tmp_path],
                          match=f"--data {tmp_path}: parity on other images needs the PyTorch model, and its checkpoint "
                                f"{moved_export.parent.parent / 'work' / 'ckpt' / 'best.pt'}")
    assert line.endswith("drop --data to check parity against the reference stored in the export")


# ---------------------------------------------------------------------------------------------
# Two exports of one model in one run: their files could not be told apart, so they are refused


@pytest.fixture(scope="module")
def twin_exports(shared_export, tmp_path_factory):
    """Two exports of the tiny model holding files of the same names (as two exports of one model with
    different calibration do): copies of its ONNX fp32 + int8 files."""
    root = tmp_path_factory.mktemp("twins")
    keep = [("onnx", "fp32"), ("onnx", "int8")]
    return tuple(copy_export(shared_export.dir, root / name, keep=keep) for name in ("e_def", "e_calib"))


@pytest.mark.parametrize("mode", ["gate", "update"])
def test_two_exports_with_files_of_the_same_names_are_refused_before_timing(cli, twin_exports, baseline, tmp_path,
                                                                             no_timing, mode):
    """Gating both against a baseline of one would gate only one file per name (the other never); recording them
    would write a baseline that the next gate refuses. Refused, naming both files and the fix."""
    e_def, e_calib = twin_exports
    extra = ("--baseline", baseline, "--max-slowdown", "5") if mode == "gate" else (
        "--baseline", tmp_path / "new.json", "--update-baseline")
    line = assert_refused(cli, "bench", e_def, e_calib, "--threads", "1", "--runs", "3", "--sessions", "1",
                          "--no-confirm", *extra, watch=[tmp_path, baseline, *twin_exports])
    assert line == (f"error: {e_def / 'tiny-fp32.onnx'} and {e_calib / 'tiny-fp32.onnx'} are both onnx fp32 files: one "
                    "run cannot tell their results apart (table, gate, baseline); bench each export folder in its own "
                    "run, each with its own --baseline")


def test_a_file_given_again_with_its_folder_is_benched_once(twin_exports):
    from edgeseg.bench.harness import BenchRequest, plan_bench

    e_def, _ = twin_exports
    plan = plan_bench(BenchRequest((str(e_def), str(e_def / "tiny-int8.onnx"), str(e_def))))
    assert [art.path for _, art in plan.pairs] == ["tiny-fp32.onnx", "tiny-int8.onnx"]


# ---------------------------------------------------------------------------------------------
# The table: which file each row is stays readable at any console width

DEFAULT_STEM = "portrait_unet_mnv3_small_minimal"  # file names as long as the default model's


def long_names_doc() -> dict:
    """A bench JSON of six files named like the default model's (ONNX and TFLite, fp32/fp16/int8)."""
    results = []
    for fmt, runtime in (("onnx", "onnxruntime"), ("tflite", "litert")):
        for precision in ("fp32", "fp16", "int8"):
            results.append({"artifact": f"{DEFAULT_STEM}-{precision}.{fmt}", "format": fmt, "precision": precision,
                            "runtime": runtime, "threads": 1, "bytes": 2_000_000, "latency_ms": {"p50": 3.61, "p90": 3.8},
                            "normalized_p50": 1.234, "load_ms": 45.0, "peak_rss_mb": 310.0,
                            "parity": {"agreement_miou": 0.9967, "stress": {"agreement_miou": 0.9537}, "gt_miou": 0.91}})
    return {"results": results}


@pytest.mark.parametrize("width", [160, 200])
def test_table_rows_show_each_files_format_and_precision_in_a_narrow_console(width):
    """A terminal narrower than the table: the file names break after - _ . (never cut off with ...), so each
    row still reads '-int8.' and 'onnx' or 'tflite' whole."""
    import io

    from rich.console import Console

    from edgeseg.bench.report import COLUMNS, table_rows
    from edgeseg.ui import print_table

    doc = long_names_doc()
    out = io.StringIO()
    print_table("bench", COLUMNS, table_rows(doc), Console(file=out, width=width, color_system=None))
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= width
    cells = [ln.split("\u2502")[1].strip() for ln in lines if ln.startswith("\u2502")]  # the file-name column
    assert "".join(cells) == "".join(r["artifact"] for r in doc["results"])  # nothing cut off
    for token, rows in (("fp32", 2), ("fp16", 2), ("int8", 2), ("onnx", 3), ("tflite", 3)):
        assert sum(token in cell for cell in cells) == rows, (token, cells)


def test_table_in_a_ci_log_keeps_each_file_name_on_its_row():
    """stdout not a terminal (a CI log): the table is as wide as it needs, nothing folded or cut off."""
    import sys

    from conftest import run_command

    code = ("import json, sys; from edgeseg.ui import print_table; from edgeseg.bench.report import COLUMNS, table_rows; "
            "print_table('bench', COLUMNS, table_rows(json.loads(sys.argv[1])))")
    doc = long_names_doc()
    r = run_command([sys.executable, "-c", code, json.dumps(doc)], timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("\u2502")]
    assert len(rows) == len(doc["results"])
    for row, result in zip(rows, doc["results"]):
        assert f"\u2502 {result['artifact']} " in row and f" {result['runtime']} " in row
