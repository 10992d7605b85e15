"""Does ``normalized_p50`` shrug off machine load better than raw p50?

Times each artifact ``--repeats`` times with the machine quiet and as many times with a
busy-loop process on each benchmark CPU, alternating quiet and loaded blocks. The benchmark
process and the busy loops are pinned to the same CPUs (``--cpus``, Linux), so the load
really competes with the model. Prints, and writes as JSON + Markdown, the coefficient of
variation of each metric and its loaded/quiet ratio:

- ``raw p50``: the model's median latency in ms;
- ``calibration p50``: the calibration workload's (same runtime and precision class as the
  model), timed interleaved with the model;
- ``ratio of p50s``: p50 / calibration p50 of the same block (an older estimator, shown for
  comparison);
- ``normalized p50``: median over runs of (model ms / the calibration ms timed just before
  it), what ``edgeseg bench`` reports and the gate compares.

A metric that ignores load has loaded/quiet near 1.00.

    python benchmarks/noise_check.py out/bench --repeats 5 --runs 30 --out out/noise_check
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

from common import cv, md_table, run_main, select_artifacts, timing_image, write_outputs

from edgeseg.bench.harness import host_info
from edgeseg.bench.latency_reference import CalibrationPool
from edgeseg.bench.latency import time_interleaved
from edgeseg.runtime.loader import runner_for_artifact

METRICS = ("raw p50 ms", "calibration p50 ms", "ratio of p50s", "normalized p50")


def spin(cpu: int | None, deadline: float, ready) -> None:
    """Busy-loop on pure-Python arithmetic (on ``cpu`` when given) until ``deadline`` (time.time())."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    ready.set()
    x = 0
    while time.time() < deadline:
        for i in range(10_000):
            x = (x * 31 + i) % 1_000_003


class BusyLoad:
    """One busy-loop process per CPU while the ``with`` block runs; each ends itself after ``max_s``."""

    def __init__(self, cpus: list[int | None], max_s: float):
        self.cpus, self.max_s = cpus, max_s
        self.covered = False  # True when every loop was still spinning when the block ended

    def __enter__(self):
        deadline = time.time() + self.max_s
        self.procs = []
        for cpu in self.cpus:
            ready = mp.Event()
            proc = mp.Process(target=spin, args=(cpu, deadline, ready), daemon=True)
            proc.start()
            self.procs.append((proc, ready))
        for _, ready in self.procs:
            ready.wait(60)
        return self

    def __exit__(self, *exc):
        self.covered = all(proc.is_alive() for proc, _ in self.procs)
        for proc, _ in self.procs:
            proc.terminate()
        for proc, _ in self.procs:
            proc.join()


def measure(runner, image, calib, args) -> dict:
    t = time_interleaved(runner, image, calib, runs=args.runs, warmup=args.warmup)
    ratio = t.latency["p50"] / t.calibration["p50"]
    return dict(zip(METRICS, (t.latency["p50"], t.calibration["p50"], round(ratio, 5), t.normalized_p50)))


def summarize(samples: dict) -> list[dict]:
    """Per artifact and metric: means, loaded/quiet ratio and CVs over the repeats."""
    rows = []
    for name, by_cond in samples.items():
        for metric in METRICS:
            quiet = [s[metric] for s in by_cond["quiet"]]
            loaded = [s[metric] for s in by_cond["loaded"]]
            rows.append({"artifact": name, "metric": metric, "quiet_mean": statistics.fmean(quiet),
                         "loaded_mean": statistics.fmean(loaded),
                         "loaded_over_quiet": statistics.fmean(loaded) / statistics.fmean(quiet),
                         "cv_quiet": cv(quiet), "cv_loaded": cv(loaded), "cv_all": cv(quiet + loaded)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export_dir", nargs="?", default="out/bench")
    ap.add_argument("--artifact", action="append", metavar="FORMAT:PRECISION",
                    help="repeatable [onnx:fp32 and tflite:int8]")
    ap.add_argument("--repeats", type=int, default=5, help="quiet and loaded blocks each (K)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--cpus", default=None, help="CPUs shared by the benchmark and the busy loops [the last one]")
    ap.add_argument("--threads", type=int, default=None, help="runtime threads [number of --cpus]")
    ap.add_argument("--max-load-s", type=float, default=300, help="a busy loop ends itself after this long")
    ap.add_argument("--out", default="out/noise_check", help="writes OUT.json and OUT.md")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else sorted(os.sched_getaffinity(0))[-1:]
        os.sched_setaffinity(0, cpus)  # before any runtime starts its threads, which inherit it
    else:  # macOS: no pinning; one unpinned busy loop per core
        cpus = [None] * (os.cpu_count() or 1)
    args.threads = args.threads or len(cpus)

    manifest, arts = select_artifacts(args.export_dir, args.artifact or ["onnx:fp32", "tflite:int8"])
    image, pool = timing_image(manifest), CalibrationPool()
    runners = {a.path: runner_for_artifact(a, manifest, args.threads) for a in arts}
    calibs = {a.path: pool.get(a.format, a.precision, args.threads) for a in arts}
    samples = {name: {"quiet": [], "loaded": []} for name in runners}
    uncovered = 0
    for k in range(args.repeats):
        for name, runner in runners.items():
            samples[name]["quiet"].append(measure(runner, image, calibs[name], args))
        with BusyLoad(cpus, args.max_load_s) as load:
            for name, runner in runners.items():
                samples[name]["loaded"].append(measure(runner, image, calibs[name], args))
        uncovered += not load.covered
        print(f"repeat {k + 1}/{args.repeats}: " + "; ".join(
            f"{n}: quiet {s['quiet'][-1]['raw p50 ms']:.2f} ms / loaded {s['loaded'][-1]['raw p50 ms']:.2f} ms"
            for n, s in samples.items()), flush=True)
    for runner in runners.values():
        runner.close()
    pool.close()

    rows = summarize(samples)
    settings = {"export_dir": args.export_dir, "repeats": args.repeats, "runs": args.runs, "warmup": args.warmup,
                "threads": args.threads, "cpus": cpus, "busy_loops": len(cpus)}
    header = ["artifact", "metric", "quiet mean", "loaded mean", "loaded/quiet", "CV quiet", "CV loaded", "CV all"]
    table = md_table(header, [[r["artifact"], r["metric"], r["quiet_mean"], r["loaded_mean"], r["loaded_over_quiet"],
                               r["cv_quiet"], r["cv_loaded"], r["cv_all"]] for r in rows])
    note = (f"{args.repeats} quiet and {args.repeats} loaded blocks of {args.runs} runs, {args.threads} thread(s), "
            f"{len(cpus)} busy loop(s) on CPU(s) {cpus} shared with the benchmark. "
            "A load-proof metric has loaded/quiet near 1 and a small CV all.")
    if uncovered:
        note += f" WARNING: in {uncovered} loaded block(s) a busy loop ended early; raise --max-load-s."
    markdown = f"# noise check\n\n{note}\n\n{table}\n"
    print("\n" + markdown)
    paths = write_outputs(args.out, {"settings": settings, "host": host_info(), "summary": rows, "samples": samples},
                          markdown)
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    run_main(main)
