"""Core ML Runners: Apple's runtime on macOS, the numpy reference interpreter elsewhere."""
from __future__ import annotations

import platform

import numpy as np

from edgeseg.errors import require
from edgeseg.manifest import Artifact, Manifest
from edgeseg.runtime.base import Runner, check_batch
from edgeseg.runtime.loader import RUNNER_FACTORIES


def on_macos() -> bool:
    return platform.system() == "Darwin"


class CoreMLRunner(Runner):
    """Apple's Core ML runtime (macOS only); the image input takes raw RGB pixels."""

    runtime = "coreml"
    formats = ("coreml",)

    def __init__(self, path: str, *, input_name: str, output_name: str, compute_units: str = "CPU_ONLY"):
        ct = require("coremltools", "coreml", "running Core ML models")
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        spec = self.model.get_spec()
        img = spec.description.input[0].type.imageType
        self.height, self.width = img.height, img.width
        self.input_name, self.output_name = input_name, output_name
        self.threads = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if not on_macos():
            return False, "Core ML prediction needs macOS (Apple's runtime); using the coreml-reference runner"
        return True, ""

    def run(self, images: np.ndarray) -> np.ndarray:
        from PIL import Image

        images = check_batch(images, self.height, self.width)
        outs = [self.model.predict({self.input_name: Image.fromarray(img)})[self.output_name] for img in images]
        return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, *np.shape(o)[-3:]) for o in outs])


class CoreMLReferenceRunner(Runner):
    """Evaluates the exported ML Program op by op with numpy (a reference, not Apple's runtime)."""

    runtime = "coreml-reference"
    formats = ("coreml",)
    latency_note = "not timed: Core ML prediction needs macOS; the numpy reference runner here checks parity only"

    def __init__(self, path: str):
        require("coremltools", "coreml", "reading Core ML models")
        from edgeseg.runtime.coreml_reference import CoreMLReferenceProgram

        self.program = CoreMLReferenceProgram.load(path)
        self.threads = None

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.program.predict(images)


def _factory(art: Artifact, manifest: Manifest, threads: int | None, spin: bool = True) -> Runner:
    if on_macos():
        return CoreMLRunner(str(art.file), input_name=art.input["name"], output_name=art.output["name"])
    return CoreMLReferenceRunner(str(art.file))


RUNNER_FACTORIES["coreml"] = _factory
