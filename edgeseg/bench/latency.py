"""Timing of Runners, interleaved with a fixed calibration workload (layer 3).

Runners never time themselves; this module does, with ``time.perf_counter`` around ``run``.
Each timed run of a model is paired with a run of the calibration workload right before it,
so both see the same machine load and ``p50 / calibration_p50`` cancels most of it out.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from edgeseg.runtime.base import Runner


def summarize(samples_ms: list[float]) -> dict:
    """p50/p90/p99/mean/min of latency samples in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
            "p99": round(float(np.percentile(a, 99)), 4), "mean": round(float(a.mean()), 4), "min": round(float(a.min()), 4)}


class CalibrationWorkload:
    """A fixed small MobileNet-style conv net (seeded weights) run in PyTorch eager.

    It exercises the same limits as the segmenters (depthwise/pointwise convs, memory
    bandwidth, thread scaling) and is identical on every machine and every run.
    """

    name = "mobilenet-block-stack-128 (pytorch eager)"

    def __init__(self, size: int = 128):
        g = torch.Generator().manual_seed(0)
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish()]
        c = 16
        for cout, stride in ((24, 2), (24, 1), (40, 2), (40, 1), (80, 2)):
            layers += [nn.Conv2d(c, c, 3, stride, 1, groups=c), nn.BatchNorm2d(c), nn.Hardswish(),
                       nn.Conv2d(c, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()]
            c = cout
        self.net = nn.Sequential(*layers).eval()
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        self.x = torch.randn(1, 3, size, size, generator=g)

    @torch.inference_mode()
    def run_once(self, threads: int) -> float:
        """One timed forward pass at ``threads`` intra-op threads, in ms."""
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            t0 = time.perf_counter()
            self.net(self.x)
            return (time.perf_counter() - t0) * 1000
        finally:
            torch.set_num_threads(prev)


@dataclass
class Timing:
    latency: dict
    calibration: dict
    samples_ms: list[float]
    calibration_ms: list[float]

    @property
    def normalized_p50(self) -> float:
        return round(self.latency["p50"] / self.calibration["p50"], 5)


def time_interleaved(runner: Runner, image: np.ndarray, calib: CalibrationWorkload, *, threads: int, runs: int,
                     warmup: int) -> Timing:
    """``warmup`` untimed runs, then ``runs`` pairs of (calibration run, model run)."""
    batch = image[None]
    for _ in range(warmup):
        runner.run(batch)
        calib.run_once(threads)
    model_ms, calib_ms = [], []
    for _ in range(runs):
        calib_ms.append(calib.run_once(threads))
        t0 = time.perf_counter()
        runner.run(batch)
        model_ms.append((time.perf_counter() - t0) * 1000)
    return Timing(summarize(model_ms), summarize(calib_ms), model_ms, calib_ms)


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

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
