"""The calibration workload: one fixed small segmenter, timed through the same runtime (layer 3).

Latency on a shared machine drifts with load, CPU frequency and cache pressure, and each
runtime reacts differently (ONNX Runtime's and XNNPACK's kernels are not PyTorch's). So every
model is normalized by the *same* small MobileNet-style segmenter run through the *same*
runtime, precision class and thread count as the model itself:

- PyTorch results: ``calibration_net()`` in PyTorch eager (built from code, seeded);
- ONNX / TFLite / Core ML / ExecuTorch results: that network exported once and committed under
  ``assets/calibration/`` in each *compute* precision a runtime has (int8 kernels in ONNX
  Runtime and XNNPACK, fp16 compute in Core ML; everything else runs fp32 kernels). The files
  are fixed on purpose: regenerating them with other converter versions would change the
  workload and make every committed baseline stale (``benchmarks/make_calibration.py``; its
  ``--add FORMAT`` adds a new format's files and leaves the others' bytes as they are).

Some runtimes keep one CPU thread pool per process (``Runner.process_thread_pool``): ExecuTorch's can
only be resized while none of its programs is loaded. ``CalibrationPool.make_room`` closes the
cached workloads of such a runtime at other thread counts before a runner of it opens at a new one.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.errors import ArtifactError
from edgeseg.manifest import read_manifest
from edgeseg.models.checkpoint import ModelInfo
from edgeseg.runtime.base import Runner
from edgeseg.runtime.loader import RUNNERS, runner_class, runner_for_artifact
from edgeseg.runtime.torch_runner import TorchRunner

ASSETS = Path(__file__).parent / "assets" / "calibration"
SIZE = 256
INFO = ModelInfo(name="edgeseg-calibration-v1", arch="calibration-conv-stack", options={}, classes=("a", "b"),
                 input_size=(SIZE, SIZE), mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))
# format -> {artifact precision: calibration file precision}: the kernels an artifact really
# runs (TFLite fp16 = fp16 weights, fp32 compute; Core ML int8/pal6 = compressed weights,
# fp16 compute). Unlisted pairs use the fp32 file.
CALIBRATION_PRECISIONS = {"onnx": {"int8": "int8"}, "tflite": {"int8": "int8"},
                          "coreml": {"fp16": "fp16", "int8": "fp16", "pal6": "fp16"},
                          "executorch": {"int8": "int8"}}


class CalibrationNet(nn.Module):
    """Depthwise/pointwise blocks to stride 16, a 1x1 head, bilinear upsample: a segmenter in miniature."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish()]
        c = 16
        for cout, stride in ((24, 2), (24, 1), (40, 2), (40, 1), (80, 2)):
            layers += [nn.Conv2d(c, c, 3, stride, 1, groups=c), nn.BatchNorm2d(c), nn.Hardswish(),
                       nn.Conv2d(c, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()]
            c = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, len(INFO.classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(self.body(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def calibration_net() -> CalibrationNet:
    """The calibration network with its fixed seeded weights, in eval mode."""
    g = torch.Generator().manual_seed(0)
    net = CalibrationNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def calibration_image() -> np.ndarray:
    """The fixed uint8 RGB input the calibration workload is timed on."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def calibration_precision(fmt: str, precision: str) -> str:
    """Which calibration file times like an artifact of ``fmt`` at ``precision``."""
    return CALIBRATION_PRECISIONS.get(fmt, {}).get(precision, "fp32")


def asset_precisions(fmt: str) -> tuple[str, ...]:
    """The calibration files a format needs (what ``benchmarks/make_calibration.py`` writes)."""
    return ("fp32", *sorted(set(CALIBRATION_PRECISIONS.get(fmt, {}).values())))


class CalibrationWorkload:
    """A Runner of the calibration network plus its input; ``run_once`` times one pass."""

    def __init__(self, runner: Runner, name: str):
        self.runner, self.name = runner, name
        self.batch = calibration_image()[None]

    def run_once(self) -> float:
        t0 = time.perf_counter()
        self.runner.run(self.batch)
        return (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        self.runner.close()


def open_workload(fmt: str, precision: str, threads: int) -> CalibrationWorkload:
    """The calibration workload matching a result's format ('pytorch' for eager), precision and threads.

    Uses the same Runner factory as the models, so the runtime (and on macOS, Core ML itself)
    is the one the model runs in. Raises ``MissingExtra`` when that runtime is not installed.
    """
    if fmt == "pytorch":
        runner = TorchRunner(calibration_net(), input_size=INFO.input_size, mean=INFO.mean, std=INFO.std, threads=threads)
        return CalibrationWorkload(runner, f"{INFO.name} fp32 (pytorch eager)")
    manifest = read_manifest(ASSETS)
    cprec = calibration_precision(fmt, precision)
    art = manifest.find(fmt, cprec)
    if art is None:
        raise ArtifactError(f"{ASSETS}: no {fmt} {cprec} calibration file (reinstall edgeseg)")
    # no busy-waiting after a calibration run: it would steal a core from the model timed next
    runner = runner_for_artifact(art, manifest, threads, spin=False)
    return CalibrationWorkload(runner, f"{INFO.name} {cprec} ({runner.runtime})")


class CalibrationPool:
    """Calibration workloads opened on demand and shared by every result of one bench run."""

    def __init__(self):
        self._open: dict[tuple[str, str, int], CalibrationWorkload] = {}
        self._names: set[str] = set()  # of every workload opened, closed early by make_room or not

    def get(self, fmt: str, precision: str, threads: int) -> CalibrationWorkload:
        key = (fmt, calibration_precision(fmt, precision), threads)
        if key not in self._open:
            self.make_room(fmt, threads)
            self._open[key] = open_workload(fmt, precision, threads)
            self._names.add(self._open[key].name)
        return self._open[key]

    def make_room(self, fmt: str, threads: int) -> None:
        """Close the cached workloads that would stop a ``fmt`` runner from opening at ``threads``: those of
        a runtime with one thread pool per process (``Runner.process_thread_pool``) at another thread count.
        Call it before opening a model runner of ``fmt``; ``get`` calls it before opening a workload."""
        if fmt not in RUNNERS or not runner_class(fmt).process_thread_pool:
            return
        for key in [k for k in self._open if k[0] == fmt and k[2] != threads]:
            self._open.pop(key).close()

    def names(self) -> list[str]:
        return sorted(self._names)

    def close(self) -> None:
        for w in self._open.values():
            w.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
