"""Timing of Runners, interleaved with the calibration workload (layer 3).

Runners never time themselves; this module does, with ``time.perf_counter`` around ``run``.
Each timed run of a model is paired with a run of the calibration workload (same runtime,
see ``calibration.py``) right before it, so both see the same machine load; the median of
the per-pair ratios, ``normalized_p50``, cancels most of that load out.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from edgeseg.bench.latency_reference import CalibrationWorkload
from edgeseg.runtime.base import Runner


def summarize(samples_ms: list[float]) -> dict:
    """p50/p90/p99/mean/min of latency samples in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
            "p99": round(float(np.percentile(a, 99)), 4), "mean": round(float(a.mean()), 4), "min": round(float(a.min()), 4)}


@dataclass
class Timing:
    latency: dict
    calibration: dict
    samples_ms: list[float]
    calibration_ms: list[float]

    @property
    def normalized_p50(self) -> float:
        """Median over runs of (model ms / the calibration ms timed just before it)."""
        ratios = np.asarray(self.samples_ms) / np.asarray(self.calibration_ms)
        return round(float(np.median(ratios)), 5)


def time_interleaved(runner: Runner, image: np.ndarray, calib: CalibrationWorkload, *, runs: int, warmup: int) -> Timing:
    """``warmup`` untimed runs, then ``runs`` pairs of (calibration run, model run)."""
    batch = image[None]
    for _ in range(warmup):
        runner.run(batch)
        calib.run_once()
    model_ms, calib_ms = [], []
    for _ in range(runs):
        calib_ms.append(calib.run_once())
        t0 = time.perf_counter()
        runner.run(batch)
        model_ms.append((time.perf_counter() - t0) * 1000)
    return Timing(summarize(model_ms), summarize(calib_ms), model_ms, calib_ms)


def combine_sessions(timings: list[Timing]) -> tuple[Timing, float]:
    """Pool the runs of several fresh loads of one model; normalized p50 = median over loads.

    A freshly loaded session keeps its own speed for its whole life (memory placement, which
    core it lands on), so on a shared machine one load can sit ~10% off the next; the median
    over loads is what stops the gate from flapping on that (benchmarks/flap_check.py).
    """
    model = [ms for t in timings for ms in t.samples_ms]
    calib = [ms for t in timings for ms in t.calibration_ms]
    pooled = Timing(summarize(model), summarize(calib), model, calib)
    return pooled, round(float(np.median([t.normalized_p50 for t in timings])), 5)


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux ``clear_refs``); False where unsupported."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset, in MB."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource
    import sys

    # ru_maxrss is in kilobytes on Linux but in bytes on macOS
    unit = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit, 1)
