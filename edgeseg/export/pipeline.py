"""``edgeseg export``: one checkpoint -> every (format, precision) file + manifest, parity-gated.

Everything is written into a staging folder beside the destination and swapped in at the
end, so an interrupted or failed export never leaves a directory that looks complete.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg import __version__
from edgeseg.bench.parity import DEFAULT_MAX_GT_DROP, DEFAULT_THRESHOLDS, check_parity, reference_set, skipped
from edgeseg.errors import EdgesegError, MissingExtra, require
from edgeseg.export.base import EXPORTERS, ExportJob, embedded_metadata
from edgeseg.export.calibration import calibration_images, parity_source
from edgeseg.manifest import Artifact, Manifest
from edgeseg.models.checkpoint import resolve_checkpoint
from edgeseg.models.profile import count_macs, count_params
from edgeseg.runtime.loader import runner_for_artifact, synth_task_for
from edgeseg.runtime.torch_runner import TorchRunner

TOOL_PACKAGES = ("torch", "torchvision", "timm", "onnx", "onnxscript", "onnxruntime", "litert-torch", "ai-edge-litert",
                 "ai-edge-quantizer", "mediapipe", "coremltools")


@dataclass
class ExportRequest:
    checkpoint: str | None = None
    out_dir: str = "out/default"
    formats: tuple[str, ...] = ("onnx", "tflite", "coreml")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    calib_dir: str | None = None
    data_dir: str | None = None
    calib_count: int = 32
    parity_images: int = 16
    thresholds: dict = field(default_factory=dict)
    max_gt_drop: float = DEFAULT_MAX_GT_DROP


@dataclass
class ExportResult:
    manifest: Manifest
    out_dir: Path

    @property
    def failed(self) -> list[Artifact]:
        return [a for a in self.manifest.artifacts if a.parity.get("passed") is False]


def tool_versions() -> dict:
    """Installed versions of the packages that shape exported files."""
    out = {"edgeseg": __version__}
    for name in TOOL_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def load_exporters(formats, precisions) -> dict:
    """Instantiate each format's exporter; reject unknown formats and unsupported pairs up front."""
    from edgeseg.export import coreml, onnx, tflite  # noqa: F401  (register exporters)

    out = {}
    for fmt in formats:
        if fmt not in EXPORTERS:
            raise EdgesegError(f"unknown format {fmt!r}; choose from {', '.join(EXPORTERS)}")
        exporter = EXPORTERS[fmt]()
        for p in precisions:
            if p not in exporter.precisions:
                raise EdgesegError(f"{fmt} export does not support precision {p!r}; supported: {', '.join(exporter.precisions)}")
        out[fmt] = exporter
    return out


_EXTRA_MODULES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "tflite": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "mediapipe"),
                  "coreml": ("coremltools",)}


def _check_extra(exporter) -> None:
    for module in _EXTRA_MODULES[exporter.extra]:
        require(module, exporter.extra, f"{exporter.format} export")


def model_section(ckpt, model, task: str) -> dict:
    info = ckpt.info
    h, w = info.input_size
    return {"name": info.name, "architecture": info.arch, "options": info.to_dict()["options"], "classes": list(info.classes),
            "task": task, "input": {"height": h, "width": w}, "mean": list(info.mean), "std": list(info.std),
            "params": count_params(model), "macs": count_macs(model, h, w),
            "checkpoint": {"path": str(ckpt.path), "sha256": ckpt.sha256}}


def run_export(req: ExportRequest, on_artifact=None) -> ExportResult:
    """Export, check parity of every file, write the manifest; returns what was written.

    ``on_artifact(artifact)`` is called after each file is checked (for progress output).
    """
    exporters = load_exporters(req.formats, req.precisions)
    ckpt = resolve_checkpoint(req.checkpoint)
    info = ckpt.info
    task = str(ckpt.recipe.get("data", {}).get("task") or synth_task_for(info.classes))
    recipe_root = ckpt.recipe.get("data", {}).get("root")
    calib, calib_from = calibration_images(req.calib_dir, recipe_root, task, req.calib_count, info.input_size)
    source, described = parity_source(req.data_dir, task, req.parity_images, info.input_size, info.classes)
    for exporter in exporters.values():  # after the cheap input checks: these imports are slow and chatty
        _check_extra(exporter)
    model = ckpt.model()
    ref = reference_set(TorchRunner(model, input_size=info.input_size, mean=info.mean, std=info.std), source,
                        info.input_size, req.parity_images, info.classes, described)
    thresholds = {**DEFAULT_THRESHOLDS, **req.thresholds}
    dest = Path(req.out_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".staging", dir=dest.parent))
    try:
        manifest = Manifest(model=model_section(ckpt, model, task), tools=tool_versions())
        manifest.model["calibration"] = {"source": calib_from, "images": len(calib)}
        meta = embedded_metadata(info, __version__)
        for fmt, exporter in exporters.items():
            for precision in req.precisions:
                job = ExportJob(model, info, precision, calib, staging, f"{info.name}-{precision}", metadata=meta)
                art = exporter.export(job)
                art.parity = _parity(art, manifest, ref, thresholds[precision], req.max_gt_drop)
                manifest.artifacts.append(art)
                if on_artifact:
                    on_artifact(art)
        manifest.write(staging)
        _swap_in(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for a in manifest.artifacts:
        a.root = dest
    manifest.root = dest
    return ExportResult(manifest, dest)


def _parity(art: Artifact, manifest: Manifest, ref, threshold: float, max_gt_drop: float) -> dict:
    try:
        runner = runner_for_artifact(art, manifest)
    except MissingExtra as exc:
        return skipped(str(exc), threshold)
    with runner:
        result = check_parity(runner, ref, threshold=threshold, max_gt_drop=max_gt_drop)
    if runner.runtime == "coreml-reference":
        result["note"] = "evaluated by edgeseg's numpy reference interpreter of the ML Program, not Apple's Core ML runtime"
    return result


def _swap_in(staging: Path, dest: Path) -> None:
    """Replace ``dest`` by ``staging`` (rename; the old directory is removed afterwards)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
