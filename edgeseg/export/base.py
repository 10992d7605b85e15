"""What every exporter takes and returns (layer 4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch.nn as nn

from edgeseg.errors import EdgesegError
from edgeseg.manifest import SUFFIXES, Artifact, file_digest
from edgeseg.models.checkpoint import ModelInfo
from edgeseg.recipe import ExportCfg

CALIBRATED_PRECISION = "int8"  # the precision whose files are calibrated on images (static activation ranges)


@dataclass(frozen=True)
class ExportJob:
    """One (model, precision) to export: the fp32 model takes normalized NCHW input."""

    model: nn.Module
    info: ModelInfo
    precision: str
    calib: list[np.ndarray]  # uint8 RGB HWC at the model's input size
    out_dir: Path
    stem: str  # file name without suffix: <model>-<precision>
    metadata: dict = field(default_factory=dict)  # string facts to embed (version, classes, ...)
    calib_method: str = ExportCfg.calib_method  # how an int8 file's activation ranges are calibrated (see calib_methods)


class Exporter(Protocol):
    format: str
    precisions: tuple[str, ...]
    extra: str  # pip extra that provides the dependencies
    calib_methods: tuple[str, ...]  # what its int8 quantizer offers (recipe.CALIB_METHODS names); () = not calibrated

    def export(self, job: ExportJob) -> Artifact: ...


class PerModelCache:
    """What an exporter converted for one model, reused across that model's precisions (a converted
    graph, a traced program); a job with another model starts an empty one."""

    def __init__(self):
        self._model_id: int | None = None
        self._data: dict = {}

    def of(self, model) -> dict:
        if id(model) != self._model_id:
            self._model_id, self._data = id(model), {}
        return self._data


EXPORTERS: dict[str, Callable[[], Exporter]] = {}


def register_exporter(fmt: str):
    """Class decorator: make an exporter available under ``fmt``."""
    def deco(cls):
        EXPORTERS[fmt] = cls
        return cls
    return deco


def check_precision(exporter: Exporter, precision: str) -> None:
    """Unsupported (format, precision) pairs are errors, never silently rewritten."""
    if precision not in exporter.precisions:
        raise EdgesegError(f"{exporter.format} export does not support precision {precision!r}; "
                           f"supported: {', '.join(exporter.precisions)}")


def artifact_for(job: ExportJob, fmt: str, *, input: dict, output: dict, quantized: str, details: dict | None = None) -> Artifact:
    """The manifest entry for a file already written at ``job.out_dir / (job.stem + suffix)``."""
    path = job.out_dir / f"{job.stem}{SUFFIXES[fmt]}"
    size, digest = file_digest(path)
    return Artifact(format=fmt, precision=job.precision, path=path.name, bytes=size, sha256=digest,
                    input=input, output=output, quantized=quantized, details=details or {}, root=job.out_dir)


def embedded_metadata(info: ModelInfo, version: str) -> dict[str, str]:
    """The string facts every exported file carries about itself."""
    import json

    return {"edgeseg_version": version, "name": info.name, "architecture": info.arch,
            "classes": json.dumps(list(info.classes)), "mean": json.dumps(list(info.mean)),
            "std": json.dumps(list(info.std)), "input_size": json.dumps(list(info.input_size))}
