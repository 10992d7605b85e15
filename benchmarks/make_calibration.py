"""Make the committed calibration workload files (edgeseg/bench/assets/calibration/).

Run this only on purpose: the files are fixed so that normalized latencies compare over time.

    python benchmarks/make_calibration.py                   # regenerate every file
    python benchmarks/make_calibration.py --add executorch  # add one new format's files

Regenerating writes new files for every format: that changes the workload, so every committed
baseline must be re-recorded afterwards (``python benchmarks/run_bench.py --update-baseline``).

``--add FORMAT`` exports only that format's files (``asset_precisions(FORMAT)``) into the existing
folder and appends them to its manifest: every file already there keeps its bytes, so committed
baselines of the other formats stay valid (only results of the new format need recording). The
manifest's ``tools`` gains the versions of tools it did not list yet; where an installed tool
differs from the version the manifest lists, the new files' ``details.tools`` records the one
that made them. A format the manifest already lists is refused.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import run_main

from edgeseg import __version__
from edgeseg.bench.latency_reference import ASSETS, INFO, asset_precisions, calibration_net
from edgeseg.errors import EdgesegError
from edgeseg.export.base import ExportJob, embedded_metadata
from edgeseg.export.pipeline import load_exporters, tool_versions
from edgeseg.manifest import FORMATS as ALL_FORMATS, Manifest, file_digest, read_manifest

FORMATS = ("onnx", "tflite", "coreml", "executorch")


def calibration_inputs() -> list[np.ndarray]:
    """The 8 fixed images the int8 files are calibrated on."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (*INFO.input_size, 3), dtype=np.uint8) for _ in range(8)]


def export_format(fmt: str, exporter, out_dir: Path) -> list:
    """Export the calibration network to ``fmt`` in each precision it needs, into ``out_dir``; the Artifacts."""
    net, calib, arts = calibration_net(), calibration_inputs(), []
    for precision in asset_precisions(fmt):
        job = ExportJob(net, INFO, precision, calib, out_dir, f"calibration-{precision}",
                        metadata=embedded_metadata(INFO, __version__))
        arts.append(exporter.export(job))
        print(f"wrote {fmt} {precision}")
    return arts


def regenerate_all() -> None:
    h, w = INFO.input_size
    manifest = Manifest(model={"name": INFO.name, "architecture": INFO.arch, "options": {}, "classes": list(INFO.classes),
                               "task": "calibration", "input": {"height": h, "width": w}, "mean": list(INFO.mean),
                               "std": list(INFO.std)}, tools=tool_versions())
    ASSETS.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".calibration.", dir=ASSETS.parent))
    staging.chmod(0o755)
    try:
        for fmt, exporter in load_exporters(FORMATS, ("fp32",)).items():
            manifest.artifacts += export_format(fmt, exporter, staging)
        manifest.write(staging)
        shutil.rmtree(ASSETS, ignore_errors=True)
        staging.rename(ASSETS)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {ASSETS}")


def add_format(fmt: str) -> None:
    """Export ``fmt``'s calibration files into the existing folder and list them in its manifest,
    leaving every other file's bytes as they are."""
    if fmt not in ALL_FORMATS:
        raise EdgesegError(f"--add {fmt}: unknown format; choose from {', '.join(ALL_FORMATS)}")
    manifest = read_manifest(ASSETS)
    if any(a.format == fmt for a in manifest.artifacts):
        raise EdgesegError(f"--add {fmt}: {ASSETS} already has {fmt} files; regenerating them changes the workload "
                           "(run without --add to regenerate every file, then re-record every baseline)")
    before = {a.path: file_digest(a.verified_file()) for a in manifest.artifacts}
    exporter = load_exporters((fmt,), ("fp32",))[fmt]
    installed = tool_versions()
    changed = {k: v for k, v in installed.items() if k in manifest.tools and manifest.tools[k] != v}
    staging = Path(tempfile.mkdtemp(prefix=".calibration-add.", dir=ASSETS.parent))
    moved: list[Path] = []
    try:
        arts = export_format(fmt, exporter, staging)
        for art in arts:
            if (ASSETS / art.path).exists():
                raise EdgesegError(f"{ASSETS / art.path} exists but the manifest does not list it; remove it first")
        for art in arts:
            (staging / art.path).rename(ASSETS / art.path)
            moved.append(ASSETS / art.path)
            art.root = ASSETS
            if changed:
                art.details["tools"] = changed
        manifest.artifacts += arts
        manifest.tools.update({k: v for k, v in installed.items() if k not in manifest.tools})
        manifest.write(ASSETS)
        moved.clear()
    finally:
        for path in moved:  # the manifest was not written: take the new files out again
            path.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    after = {a.path: file_digest(a.verified_file()) for a in read_manifest(ASSETS).artifacts if a.path in before}
    assert after == before, "an existing calibration file changed"
    print(f"added {', '.join(a.path for a in arts)} to {ASSETS} (the other {len(before)} files unchanged)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--add", metavar="FORMAT", help="add this format's files to the existing folder and manifest, "
                                                     "keeping every other file as it is")
    args = ap.parse_args()
    if args.add:
        add_format(args.add)
    else:
        regenerate_all()


if __name__ == "__main__":
    run_main(main)
