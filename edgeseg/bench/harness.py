"""``edgeseg bench``: time and check every exported file through its Runner (layer 3).

One JSON document (schema in DESIGN.md): host, the benchmarked model's identity, calibration
workload, and one result per (artifact, threads) with latency percentiles, normalized p50, load
time, peak RSS, size and parity. The PyTorch fp32 reference is timed too, so each result shows
its speed-up. ``plan_bench`` checks everything it can before any timing starts.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg import __version__
from edgeseg.bench.calibration import CalibrationPool
from edgeseg.bench.gate import SCHEMA_VERSION
from edgeseg.bench.latency import combine_sessions, peak_rss_mb, reset_peak_rss, summarize, time_interleaved
from edgeseg.bench.parity import DEFAULT_STRESS_THRESHOLDS, DEFAULT_THRESHOLDS, check_parity, reference_set, stress_set
from edgeseg.bench.slices import read_slices
from edgeseg.data.datasets import builtin_source, open_source
from edgeseg.errors import ArtifactError, EdgesegError, MissingExtra
from edgeseg.manifest import MANIFEST_NAME, Artifact, Manifest, find_artifact_for_file, read_manifest
from edgeseg.models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from edgeseg.runtime.loader import runner_for_artifact
from edgeseg.runtime.torch_runner import TorchRunner

TOOLS = ("torch", "onnxruntime", "ai-edge-litert", "coremltools")


@dataclass
class BenchRequest:
    paths: tuple[str, ...]
    data_dir: str | None = None
    threads: tuple[int, ...] = (1, 2)
    runs: int = 30  # timed (calibration, model) pairs per session
    warmup: int = 5
    sessions: int = 3  # fresh loads per result; normalized p50 is the median over them
    parity_images: int = 8
    reference: bool = True  # also time the PyTorch fp32 reference
    sample_images: int = 3  # images per artifact in the report's mask strip
    slices_file: str | None = None  # CSV id,attribute... (built-in set: its own attributes)

    def __post_init__(self):
        if not self.threads:
            raise EdgesegError("--threads is empty; give a comma-separated list, e.g. --threads 1,2")
        if min(self.threads) < 1 or len(set(self.threads)) < len(self.threads):
            raise EdgesegError(f"--threads {','.join(map(str, self.threads))}: each thread count must be 1 or more and "
                               "given once, e.g. --threads 1,2")


@dataclass
class Target:
    """One thing to benchmark: an exported artifact (with its manifest) or the PyTorch reference."""

    name: str
    format: str
    precision: str
    bytes: int
    make_runner: object  # callable(threads) -> Runner
    artifact: Artifact | None = None
    threshold: float | None = None
    extra: dict = field(default_factory=dict)
    stress_threshold: float | None = None
    gate_stress: bool = False


def _artifact_target(man: Manifest, art: Artifact) -> Target:
    """A Target for an exported file, held to the thresholds its export recorded (defaults for older exports)."""
    recorded = art.parity or {}
    stress = recorded.get("stress") or {}
    return Target(art.path, art.format, art.precision, art.bytes,
                  lambda threads, a=art, m=man: runner_for_artifact(a, m, threads), art,
                  recorded.get("threshold", DEFAULT_THRESHOLDS.get(art.precision)),
                  stress_threshold=stress.get("threshold", DEFAULT_STRESS_THRESHOLDS.get(art.precision)),
                  gate_stress=bool(stress.get("gated", False)))


def bench_targets(pairs: list[tuple[Manifest, Artifact]], reference_ckpt=None) -> list[Target]:
    """One Target per artifact, after the PyTorch fp32 reference when its checkpoint is given."""
    targets: list[Target] = []
    if reference_ckpt is not None:
        targets.append(Target("pytorch-fp32", "pytorch", "fp32", Path(reference_ckpt.path).stat().st_size,
                              lambda threads, c=reference_ckpt: TorchRunner.from_checkpoint(c, threads)))
    targets += [_artifact_target(man, art) for man, art in pairs]
    return targets


def host_info() -> dict:
    """CPU model, core count and tool versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    tools = {"edgeseg": __version__, "python": platform.python_version()}
    for name in TOOLS:
        try:
            tools[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.system(), "machine": platform.machine(), "tools": tools}


def collect_artifacts(paths) -> list[tuple[Manifest, Artifact]]:
    """Expand export directories and files into (manifest, artifact) pairs, every file checked
    against its manifest (``Artifact.verified_file``: inside the directory, sha256 as listed)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and (p / MANIFEST_NAME).is_file():
            m = read_manifest(p)
            out += [(m, a) for a in m.artifacts]
        elif p.exists():
            out.append(find_artifact_for_file(p))
        else:
            raise ArtifactError(f"not found: {p}")
    if not out:
        raise ArtifactError(f"no artifacts in {', '.join(map(str, paths))}")
    for _, art in out:
        art.verified_file()
    return out


def bench_model(pairs: list[tuple[Manifest, Artifact]]) -> dict:
    """The identity (``Manifest.model_identity``) of the one model all pairs were exported from;
    ArtifactError when they come from different models."""
    by_model = {m.model_identity()["sha256"]: m for m, _ in pairs}
    if len(by_model) > 1:
        raise ArtifactError("the paths hold exports of different models (" + ", ".join(str(m.root) for m in by_model.values())
                            + "); bench one model per run")
    return next(iter(by_model.values())).model_identity()


@dataclass
class BenchPlan:
    """A bench run checked before any timing: its request, the verified artifacts, the model's identity."""

    req: BenchRequest
    pairs: list[tuple[Manifest, Artifact]]
    model: dict


def plan_bench(req: BenchRequest) -> BenchPlan:
    """Read and verify every artifact of ``req.paths`` (all from one model); nothing is timed."""
    pairs = collect_artifacts(req.paths)
    return BenchPlan(req, pairs, bench_model(pairs))


def reference_checkpoint(manifest: Manifest):
    """The checkpoint an export was made from, found by the sha256 its manifest records: at its
    recorded path, or the packaged default; None when neither has those bytes (no reference)."""
    rec = manifest.model.get("checkpoint") or {}
    for path in (Path(rec.get("path") or ""), DEFAULT_CHECKPOINT):
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == rec.get("sha256"):
            return load_checkpoint(path)
    return None


def _parity_set(manifest: Manifest, ckpt, req: BenchRequest):
    m = manifest.model
    size = (m["input"]["height"], m["input"]["width"])
    if req.data_dir:
        source, desc = open_source(req.data_dir, "val", classes=tuple(m["classes"])), f"{req.data_dir} (val)"
    else:
        source, desc = builtin_source("eval", m.get("task", "portrait"), req.parity_images, size), "built-in synthetic eval set"
    ref_runner = TorchRunner.from_checkpoint(ckpt)
    ref = reference_set(ref_runner, source, size, req.parity_images, m["classes"], desc)
    ref.stress = stress_set(ref_runner, ref)
    if req.slices_file:
        ref.slices = read_slices(req.slices_file)
    elif not req.data_dir:
        ref.slices = {sid: source.attrs(i) for i, sid in enumerate(ref.ids)}
    return ref


def run_bench(plan: BenchPlan, on_result=None, recheck=None) -> "BenchOutcome":
    """Benchmark every artifact (and the PyTorch reference) at every thread count.

    ``recheck(results) -> results`` (optional) picks results to time once more, with fresh loads
    and the same settings, after all are done; each gets a ``confirmation`` (its normalized p50
    then). The gate's ``over_limit`` is what ``edgeseg bench --confirm`` passes.
    """
    req, pairs = plan.req, plan.pairs
    manifest = pairs[0][0]
    ckpt = reference_checkpoint(manifest)
    ref = _parity_set(manifest, ckpt, req) if ckpt is not None else None
    targets = bench_targets(pairs, ckpt if req.reference else None)
    image = ref.images[0] if ref is not None else timing_image(manifest)
    results, samples = [], {}
    with CalibrationPool() as calib:
        for target in targets:
            parity = None
            for threads in req.threads:
                row = _bench_target(target, threads, req, calib, ref, image, parity, samples)
                parity = row.get("parity", parity)
                results.append(row)
                if on_result:
                    on_result(row)
        by_name = {t.name: t for t in targets}
        for row in recheck(results) if recheck else []:
            t, threads = by_name[row["artifact"]], row["threads"]
            timings = _fresh_sessions(t, threads, req, calib.get(t.format, t.precision, threads), image, req.sessions)
            row["confirmation"] = {"normalized_p50": combine_sessions(timings)[1],
                                   "session_normalized_p50": [x.normalized_p50 for x in timings]}
        workloads = calib.names()
    _add_speedups(results)
    cal = [r["calibration_p50"] for r in results if "calibration_p50" in r]
    doc = {"schema_version": SCHEMA_VERSION, "host": host_info(), "model": plan.model,
           "calibration": {"workload": "; ".join(workloads), "p50_ms": summarize(cal)["p50"] if cal else None,
                           "note": "a fixed small segmenter run through the same runtime, precision class and thread "
                                   "count as each result (its `calibration_workload`), timed just before every model "
                                   "run; normalized_p50 = median over runs of model ms / calibration ms"},
           "parity_data": None if ref is None else ref.description, "results": results}
    strip = None if ref is None else ref.images[: req.sample_images]
    return BenchOutcome(doc, strip, samples)


@dataclass
class BenchOutcome:
    doc: dict  # the bench JSON
    sample_images: object  # uint8 [K, H, W, 3] or None
    sample_preds: dict  # target name -> argmax masks [K, H, W] on sample_images


def timing_image(manifest: Manifest):
    """The first built-in eval image at the model's size: what is timed when no parity set exists."""
    m = manifest.model
    size = (m["input"]["height"], m["input"]["width"])
    return builtin_source("eval", m.get("task", "portrait"), 1, size).get(0)[0]


def _bench_target(t: Target, threads: int, req: BenchRequest, calib: CalibrationPool, ref, image, parity,
                  samples: dict) -> dict:
    row = {"artifact": t.name, "format": t.format, "precision": t.precision, "threads": threads, "bytes": t.bytes}
    try:
        reset_peak_rss()
        t0 = time.perf_counter()
        runner = t.make_runner(threads)
        load_ms = (time.perf_counter() - t0) * 1000
        workload = None if runner.latency_note else calib.get(t.format, t.precision, threads)
    except MissingExtra as exc:
        return {**row, "runtime": t.format, "skipped": str(exc)}
    with runner:
        row["runtime"] = runner.runtime
        if workload is not None:
            timings = [time_interleaved(runner, image, workload, runs=req.runs, warmup=req.warmup)]
        else:
            row["latency_skipped"] = runner.latency_note
        if parity is None and ref is not None and t.artifact is not None:
            parity = check_parity(runner, ref, threshold=t.threshold, stress=ref.stress,
                                  stress_threshold=t.stress_threshold, gate_stress=t.gate_stress)
        if ref is not None and t.name not in samples:
            samples[t.name] = np.stack([runner.run(img[None])[0].argmax(0) for img in ref.images[: req.sample_images]])
    if workload is not None:
        timings += _fresh_sessions(t, threads, req, workload, image, req.sessions - 1)
        pooled, normalized = combine_sessions(timings)
        row.update(runs=req.runs * len(timings), sessions=len(timings), latency_ms=pooled.latency,
                   calibration_workload=workload.name, calibration_p50=pooled.calibration["p50"],
                   normalized_p50=normalized, session_normalized_p50=[t.normalized_p50 for t in timings],
                   load_ms=round(load_ms, 2), peak_rss_mb=peak_rss_mb())
    if parity is not None:
        row["parity"] = parity
    return row


def _fresh_sessions(t: Target, threads: int, req: BenchRequest, workload, image, n: int) -> list:
    """``n`` timings of ``t``, each on a fresh load of the file."""
    out = []
    for _ in range(n):
        with t.make_runner(threads) as runner:
            out.append(time_interleaved(runner, image, workload, runs=req.runs, warmup=req.warmup))
    return out


def _add_speedups(results: list[dict]) -> None:
    base = {r["threads"]: r["latency_ms"]["p50"] for r in results if r["format"] == "pytorch" and "latency_ms" in r}
    for r in results:
        if "latency_ms" in r and r["threads"] in base:
            r["speedup_vs_pytorch"] = round(base[r["threads"]] / r["latency_ms"]["p50"], 3)


def android_result(art: Artifact, parsed: dict, *, threads: int, use_gpu: bool, device: str) -> dict:
    """One bench result from a parsed ``benchmark_model`` run (fields a phone run lacks are None)."""
    lat = parsed["latency_ms"]
    return {"artifact": art.path, "format": "tflite", "precision": art.precision,
            "runtime": f"android-{'gpu' if use_gpu else 'xnnpack'}", "threads": threads, "runs": parsed.get("runs"),
            "latency_ms": {k: lat.get(k) for k in ("p50", "mean", "min", "max", "std")},
            "normalized_p50": lat["p50"], "normalization": "none (device)", "load_ms": parsed.get("init_ms"),
            "peak_rss_mb": parsed.get("peak_memory_mb"), "bytes": art.bytes, "device": device,
            "delegate": parsed.get("delegate")}


def run_android(plan: BenchPlan, *, serial: str | None, binary: str, use_gpu: bool = False) -> dict:
    """Time every .tflite artifact on an Android phone with ``benchmark_model`` over adb.

    Phones have no calibration workload here, so ``normalized_p50`` is the raw p50 and the
    result says so (``normalization: none``); gate phone results against the same phone.
    """
    from edgeseg.bench.android import check_adb, run_on_device

    if not Path(binary).is_file():
        raise ArtifactError(f"--benchmark-binary: {binary} not found (build TFLite's benchmark_model for Android)")
    req = plan.req
    model_name = check_adb(serial)
    results = []
    for _, art in plan.pairs:
        if art.format != "tflite":
            continue
        for threads in req.threads:
            parsed = run_on_device(model_path=str(art.verified_file()), binary_path=binary, serial=serial, threads=threads,
                                   use_gpu=use_gpu, use_xnnpack=not use_gpu, runs=req.runs, warmup=req.warmup)
            results.append(android_result(art, parsed, threads=threads, use_gpu=use_gpu, device=model_name))
    return {"schema_version": SCHEMA_VERSION, "host": {**host_info(), "device": model_name}, "model": plan.model,
            "calibration": {"workload": "none on device", "p50_ms": None}, "results": results}
