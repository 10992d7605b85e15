"""``edgeseg bench``: time and check every exported file through its Runner (layer 3).

One JSON document (schema in docs/design.md): host, the benchmarked model's identity, calibration
workload, and one result per (artifact, threads) with latency percentiles, normalized p50, load
time, peak RSS, size and parity. Parity is checked against the reference each export stored
beside its files (``stored_reference``): no checkpoint needed, from any directory; a file whose
parity cannot be checked gets an ``unchecked`` parity block, which the gate fails. With ``--data``
the PyTorch model computes the reference on those images instead. The PyTorch fp32 model is timed
too, when its checkpoint is here (else its row is skipped, saying why), so each result shows
its speed-up, and ``int8_vs_fp32`` (optional in schema 2: older files lack it) pairs each int8
file with the fp32 file of the same runtime. ``plan_bench`` checks everything it can before any
timing starts.
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
from edgeseg.bench.latency_reference import CalibrationPool
from edgeseg.bench.gate import SCHEMA_VERSION
from edgeseg.bench.latency import combine_sessions, peak_rss_mb, reset_peak_rss, summarize, time_interleaved
from edgeseg.bench.parity import (DEFAULT_MAX_GT_DROP, DEFAULT_STRESS_THRESHOLDS, DEFAULT_THRESHOLDS, ReferenceSet,
                                  cannot_run, check_parity, reference_set, stress_set, unchecked)
from edgeseg.evaluation.slices import read_slices
from edgeseg.bench.stored_reference import load_reference
from edgeseg.data.datasets import builtin_source, open_source
from edgeseg.errors import ArtifactError, EdgesegError, MissingExtra
from edgeseg.manifest import MANIFEST_NAME, Artifact, Manifest, find_artifact_for_file, read_manifest
from edgeseg.recipe import val_fraction_or_default
from edgeseg.models.checkpoint import PACKAGED, load_checkpoint
from edgeseg.runtime.loader import runner_for_artifact
from edgeseg.runtime.torch_runner import TorchRunner

TOOLS = ("torch", "onnxruntime", "ai-edge-litert", "coremltools", "executorch")
DATA_PARITY_IMAGES = 8  # with --data and no --parity-images


@dataclass
class BenchRequest:
    paths: tuple[str, ...]
    data_dir: str | None = None
    threads: tuple[int, ...] = (1, 2)
    runs: int = 30  # timed (calibration, model) pairs per session
    warmup: int = 5
    sessions: int = 3  # fresh loads per result; normalized p50 is the median over them
    parity_images: int | None = None  # the first N stored parity images (None: all); with --data, N of its val split
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
    bytes: int | None
    make_runner: object  # callable(threads) -> Runner
    artifact: Artifact | None = None
    threshold: float | None = None
    extra: dict = field(default_factory=dict)
    stress_threshold: float | None = None
    gate_stress: bool = False
    max_gt_drop: float = DEFAULT_MAX_GT_DROP
    reference: ReferenceSet | None = None  # what its parity is checked against
    unchecked: str = ""  # why its parity cannot be checked (no usable reference); '' when it can
    skipped: str = ""  # why it is not run at all (the PyTorch row when its checkpoint is not here)


def held_to(man: Manifest, art: Artifact) -> dict:
    """The thresholds an exported file is held to: those its parity block recorded at export, else those
    the stored reference's manifest entry records, else the defaults (exports made before either)."""
    recorded = art.parity or {}
    stress = recorded.get("stress") or {}
    entry = man.parity_reference or {}
    return {"threshold": recorded.get("threshold", (entry.get("thresholds") or DEFAULT_THRESHOLDS).get(art.precision)),
            "stress_threshold": stress.get("threshold", (entry.get("stress_thresholds") or DEFAULT_STRESS_THRESHOLDS)
                                           .get(art.precision)),
            "gate_stress": bool(stress.get("gated", entry.get("stress_gated", False))),
            "max_gt_drop": recorded.get("max_gt_drop_points", entry.get("max_gt_drop_points", DEFAULT_MAX_GT_DROP))}


def _artifact_target(man: Manifest, art: Artifact, reference: ReferenceSet | str) -> Target:
    """A Target for an exported file, checked against ``reference`` (a str: why it cannot be checked)."""
    usable = isinstance(reference, ReferenceSet)
    return Target(art.path, art.format, art.precision, art.bytes,
                  lambda threads, a=art, m=man: runner_for_artifact(a, m, threads), art, **held_to(man, art),
                  reference=reference if usable else None, unchecked="" if usable else reference)


def bench_targets(pairs: list[tuple[Manifest, Artifact]], reference_ckpt=None, *, references: dict | None = None,
                  no_checkpoint: str = "") -> list[Target]:
    """The PyTorch fp32 reference first, when its checkpoint is given (a skipped row when ``no_checkpoint``
    says why it is not here), then one Target per artifact, checked against the parity reference of its
    export directory (``references``: root -> ReferenceSet, or why there is none)."""
    targets: list[Target] = []
    if reference_ckpt is not None or no_checkpoint:
        size = None if reference_ckpt is None else Path(reference_ckpt.path).stat().st_size
        targets.append(Target("pytorch-fp32", "pytorch", "fp32", size,
                              lambda threads, c=reference_ckpt: TorchRunner.from_checkpoint(c, threads),
                              skipped="" if reference_ckpt is not None else
                              f"not timed: {no_checkpoint}; parity uses the stored reference"))
    references = references or {}
    targets += [_artifact_target(man, art, references.get(man.root, "no parity reference given")) for man, art in pairs]
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
    out = distinct_files(out)
    for _, art in out:
        art.verified_file()
    return out


def distinct_files(pairs: list[tuple[Manifest, Artifact]]) -> list[tuple[Manifest, Artifact]]:
    """``pairs`` with each file once (a folder and a file in it may both be given); ArtifactError naming both
    files when two export folders hold a file of the same format and precision (two exports of one model hold
    files of the same names). A run's results, its baseline rows (matched by format, precision, runtime and
    threads), the int8/fp32 pairs and the table could not tell such files apart, so one would go ungated."""
    seen: dict[tuple, Artifact] = {}
    out = []
    for man, art in pairs:
        other = seen.setdefault((art.format, art.precision), art)
        if other is not art and other.file.resolve() == art.file.resolve():
            continue  # the same file given twice
        if other is not art:
            raise ArtifactError(f"{other.file} and {art.file} are both {art.format} {art.precision} files: one run "
                                "cannot tell their results apart (table, gate, baseline); bench each export folder "
                                "in its own run, each with its own --baseline")
        out.append((man, art))
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
    """A bench run checked before any timing: its request, the verified artifacts, the model's identity,
    the PyTorch model's checkpoint (None, with ``no_checkpoint`` saying why, when it is not here) and each
    export directory's stored parity reference (``references``: root -> ReferenceSet, or why it cannot be
    used; empty with ``--data``, whose reference the PyTorch model computes)."""

    req: BenchRequest
    pairs: list[tuple[Manifest, Artifact]]
    model: dict
    checkpoint: object = None
    no_checkpoint: str = ""
    references: dict = field(default_factory=dict)
    slices: dict | None = None  # --slices FILE, read


def plan_bench(req: BenchRequest) -> BenchPlan:
    """Read and verify every artifact of ``req.paths`` (all from one model) and the parity references
    stored beside them; nothing is timed. With ``--data``, the PyTorch model must be here (EdgesegError
    otherwise): parity on other images needs it. A stored reference that cannot be used is not an error
    here: the files are still timed, and the gate fails naming the reason."""
    pairs = collect_artifacts(req.paths)
    model = bench_model(pairs)
    manifest = pairs[0][0]
    ckpt = reference_checkpoint(manifest)
    why = "" if ckpt is not None else no_checkpoint_note(manifest)
    if req.data_dir and ckpt is None:
        raise EdgesegError(f"--data {req.data_dir}: parity on other images needs the PyTorch model, and {why}; "
                           "drop --data to check parity against the reference stored in the export")
    slices = read_slices(req.slices_file) if req.slices_file else None
    references = {} if req.data_dir else {m.root: stored_parity_set(m, req) for m in {m.root: m for m, _ in pairs}.values()}
    return BenchPlan(req, pairs, model, ckpt, why, references, slices)


def stored_parity_set(manifest: Manifest, req: BenchRequest) -> ReferenceSet | str:
    """The parity reference stored in ``manifest``'s directory (its first ``req.parity_images`` images when
    given), or the one-line reason it cannot be used (none stored, changed since export, unreadable)."""
    try:
        ref = load_reference(manifest)
    except ArtifactError as exc:
        return str(exc)
    return ref if req.parity_images is None else ref.head(req.parity_images)


def reference_checkpoint(manifest: Manifest):
    """The checkpoint an export was made from, found by the sha256 its manifest records: at its
    recorded path, or a packaged model; None when none has those bytes."""
    rec = manifest.model.get("checkpoint") or {}
    for path in (*manifest.checkpoint_paths(), *PACKAGED.values()):
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == rec.get("sha256"):
            return load_checkpoint(path)
    return None


def no_checkpoint_note(manifest: Manifest) -> str:
    """Why the PyTorch model of an export is not here (the PyTorch row is then skipped, saying so)."""
    rec = manifest.model.get("checkpoint") or {}
    if not rec.get("sha256"):
        return "the export records no checkpoint (a module exported through the Python API)"
    return f"its checkpoint {rec.get('path')} (sha256 {str(rec['sha256'])[:12]}...) is not here (cwd {Path.cwd()})"


def data_parity_set(plan: BenchPlan) -> ReferenceSet:
    """``--data``: the PyTorch model's outputs on the val split of the data folder, with their stress set."""
    req, m = plan.req, plan.pairs[0][0].model
    size = (m["input"]["height"], m["input"]["width"])
    source = open_source(req.data_dir, "val", classes=tuple(m["classes"]),
                         val_fraction=val_fraction_or_default(m.get("val_fraction")))
    ref_runner = TorchRunner.from_checkpoint(plan.checkpoint)
    ref = reference_set(ref_runner, source, size, req.parity_images or DATA_PARITY_IMAGES, m["classes"],
                        f"{req.data_dir} (val)")
    ref.stress = stress_set(ref_runner, ref)
    return ref


def parity_references(plan: BenchPlan) -> dict:
    """Export directory root -> the ReferenceSet its files are checked against (or why there is none): the
    stored ones, or with ``--data`` the PyTorch model's on that data; ``--slices`` replaces their slices."""
    references = plan.references
    if plan.req.data_dir:
        data_ref = data_parity_set(plan)
        references = {m.root: data_ref for m, _ in plan.pairs}
    for ref in references.values():
        if isinstance(ref, ReferenceSet) and plan.slices:
            ref.slices = plan.slices
    return references


def run_bench(plan: BenchPlan, on_result=None, recheck=None) -> "BenchOutcome":
    """Benchmark every artifact (and the PyTorch reference) at every thread count.

    ``recheck(results) -> results`` (optional) picks results to time once more, with fresh loads
    and the same settings, after all are done; each gets a ``confirmation`` (its normalized p50
    then). The gate's ``over_limit`` is what ``edgeseg bench --confirm`` passes.
    """
    req = plan.req
    references = parity_references(plan)
    usable = list({id(r): r for r in references.values() if isinstance(r, ReferenceSet)}.values())
    targets = bench_targets(plan.pairs, plan.checkpoint if req.reference else None, references=references,
                            no_checkpoint=plan.no_checkpoint if req.reference else "")
    strip = usable[0].images[: req.sample_images] if usable else None
    image = usable[0].images[0] if usable else timing_image(plan.pairs[0][0])
    results, samples = [], {}
    with CalibrationPool() as calib:
        for target in targets:
            parity = None
            for threads in req.threads:
                row = _bench_target(target, threads, req, calib, image, parity, (strip, samples))
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
           "parity_data": "; ".join(dict.fromkeys(r.description for r in usable)) or None, "results": results,
           "int8_vs_fp32": int8_vs_fp32(results)}
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
    return builtin_source("eval", m.get("task") or "portrait", 1, size).get(0)[0]


def _bench_target(t: Target, threads: int, req: BenchRequest, calib: CalibrationPool, image, parity,
                  strip: tuple) -> dict:
    """One result row: ``t`` timed at ``threads`` (fresh sessions), its parity (``parity`` when already
    checked at another thread count) and its masks on the report's strip (``strip``: images, {name: masks})."""
    row = {"artifact": t.name, "format": t.format, "precision": t.precision, "threads": threads, "bytes": t.bytes}
    if t.skipped:
        return {**row, "runtime": t.format, "skipped": t.skipped}
    try:
        reset_peak_rss()
        calib.make_room(t.format, threads)  # ExecuTorch: no workload may hold its pool at another thread count
        t0 = time.perf_counter()
        runner = t.make_runner(threads)
        load_ms = (time.perf_counter() - t0) * 1000
        workload = None if runner.latency_note else calib.get(t.format, t.precision, threads)
    except MissingExtra as exc:
        return {**row, "runtime": t.format, "skipped": str(exc)}
    except ArtifactError as exc:  # the runtime cannot load this file: a finding about the file, not a crash
        return {**row, "runtime": t.format, "latency_skipped": "not timed: the runtime cannot load the file",
                "parity": cannot_run(str(exc), t.format, t.threshold)}
    with runner:
        row["runtime"] = runner.runtime
        if workload is not None:
            timings = [time_interleaved(runner, image, workload, runs=req.runs, warmup=req.warmup)]
        else:
            row["latency_skipped"] = runner.latency_note
        if parity is None and t.artifact is not None:
            parity = _target_parity(t, runner)
        images, samples = strip
        if images is not None and t.name not in samples:
            samples[t.name] = np.stack([runner.run(img[None])[0].argmax(0) for img in images])
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


def _target_parity(t: Target, runner) -> dict:
    """The parity block of an artifact target: against its reference, ``unchecked`` when it has none,
    failed (``cannot_run``) when the runtime cannot run the file."""
    if t.reference is None:
        return unchecked(t.unchecked, t.threshold)
    try:
        return check_parity(runner, t.reference, threshold=t.threshold, max_gt_drop=t.max_gt_drop,
                            stress=t.reference.stress, stress_threshold=t.stress_threshold, gate_stress=t.gate_stress)
    except ArtifactError as exc:
        return cannot_run(str(exc), runner.runtime, t.threshold)


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


INT8_RATIO_NOTE = ("int8 latency_ms.p50 / fp32 latency_ms.p50 of the same format, runtime and thread count, timed in "
                   "this run: raw milliseconds, not normalized_p50, because int8 and fp32 files are normalized by "
                   "different calibration workloads")


def int8_vs_fp32(results: list[dict]) -> dict:
    """The bench JSON's ``int8_vs_fp32`` block: for every (format, runtime, threads) with a timed fp32 and a
    timed int8 file in ``results``, ``ratio`` = int8 p50 / fp32 p50 (below 1: int8 is faster).

    Raw p50s of the same run, not normalized ones: each precision is normalized by its own calibration
    workload (an int8 file by the int8 one), so a ratio of normalized p50s would not compare the files.
    """
    timed: dict[tuple, dict] = {}
    for r in results:
        if "latency_ms" in r:
            timed.setdefault((r["format"], r["runtime"], r["threads"], r["precision"]), r)
    pairs = []
    for (fmt, runtime, threads, precision), fp32 in timed.items():
        int8 = timed.get((fmt, runtime, threads, "int8"))
        if precision == "fp32" and int8 is not None:
            fp32_ms, int8_ms = fp32["latency_ms"]["p50"], int8["latency_ms"]["p50"]
            pairs.append({"format": fmt, "runtime": runtime, "threads": threads, "fp32": fp32["artifact"],
                          "int8": int8["artifact"], "fp32_p50_ms": fp32_ms, "int8_p50_ms": int8_ms,
                          "ratio": round(int8_ms / fp32_ms, 3)})
    return {"statistic": INT8_RATIO_NOTE, "pairs": pairs}


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
            "calibration": {"workload": "none on device", "p50_ms": None}, "results": results,
            "int8_vs_fp32": int8_vs_fp32(results)}
