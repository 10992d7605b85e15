"""Regenerate the committed calibration workload files (edgeseg/bench/assets/calibration/).

Run this only on purpose: the files are fixed so that normalized latencies compare over time.
New files change the workload, so every committed baseline must be re-recorded afterwards
(``python benchmarks/run_bench.py --update-baseline``).

    python benchmarks/make_calibration.py
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import run_main

from edgeseg import __version__
from edgeseg.bench.latency_reference import ASSETS, INFO, asset_precisions, calibration_net
from edgeseg.export.base import ExportJob, embedded_metadata
from edgeseg.export.pipeline import load_exporters, tool_versions
from edgeseg.manifest import Manifest

FORMATS = ("onnx", "tflite", "coreml")


def main() -> None:
    net = calibration_net()
    rng = np.random.default_rng(1)
    calib = [rng.integers(0, 256, (*INFO.input_size, 3), dtype=np.uint8) for _ in range(8)]
    h, w = INFO.input_size
    manifest = Manifest(model={"name": INFO.name, "architecture": INFO.arch, "options": {}, "classes": list(INFO.classes),
                               "task": "calibration", "input": {"height": h, "width": w}, "mean": list(INFO.mean),
                               "std": list(INFO.std)}, tools=tool_versions())
    ASSETS.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".calibration.", dir=ASSETS.parent))
    staging.chmod(0o755)
    try:
        for fmt, exporter in load_exporters(FORMATS, ("fp32",)).items():
            for precision in asset_precisions(fmt):
                job = ExportJob(net, INFO, precision, calib, staging, f"calibration-{precision}",
                                metadata=embedded_metadata(INFO, __version__))
                manifest.artifacts.append(exporter.export(job))
                print(f"wrote {fmt} {precision}")
        manifest.write(staging)
        shutil.rmtree(ASSETS, ignore_errors=True)
        staging.rename(ASSETS)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {ASSETS}")


if __name__ == "__main__":
    run_main(main)
