"""Core ML Runners: Apple's runtime on macOS, the numpy reference interpreter elsewhere.

coremltools rewrites the ``Manifest.json`` of every .mlpackage it opens (even with
``skip_model_load``), so edgeseg opens private copies: reading never modifies an export, and an
export on a read-only file system can be read.
"""
from __future__ import annotations

import contextlib
import platform
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from edgeseg.errors import ArtifactError
from edgeseg.manifest import Artifact, Manifest
from edgeseg.runtime.base import Runner, check_batch
from edgeseg.compat import import_coremltools
from edgeseg.runtime.coreml_reference import CoreMLReferenceProgram


def on_macos() -> bool:
    return platform.system() == "Darwin"


def check_package(path: str | Path) -> Path:
    """``path`` when it is a folder holding ``Manifest.json`` (the shape of every .mlpackage); ArtifactError
    naming it otherwise. Needs no coremltools: call it first, so a wrong path is refused before that
    slow and chatty import."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a Core ML .mlpackage (a package is a folder; this is a "
                            f"{'file' if path.exists() else 'missing path'}); re-export it, or check the path")
    if not (path / "Manifest.json").is_file():
        raise ArtifactError(f"{path}: not a Core ML .mlpackage (no Manifest.json); re-export it, or check the path")
    return path


@contextlib.contextmanager
def package_copy(path: str | Path) -> Iterator[Path]:
    """A private copy of the .mlpackage at ``path`` for coremltools to open, removed on exit.

    ArtifactError when ``path`` is not a package folder (``check_package``); ArtifactErrors raised
    inside name ``path``, not the copy.
    """
    path = check_package(path)
    with tempfile.TemporaryDirectory(prefix="edgeseg-mlpackage-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copytree(path, copy)
        try:
            yield copy
        except ArtifactError as exc:
            raise ArtifactError(str(exc).replace(str(copy), str(path))) from None


class CoreMLRunner(Runner):
    """Apple's Core ML runtime (macOS only); the image input takes raw RGB pixels."""

    runtime = "coreml"
    formats = ("coreml",)

    def __init__(self, path: str, *, input_name: str, output_name: str, compute_units: str = "CPU_ONLY"):
        check_package(path)
        ct = import_coremltools("running Core ML models")
        with contextlib.ExitStack() as stack:  # the copy lives as long as the model (Apple's runtime may read it later)
            copy = stack.enter_context(package_copy(path))
            self.model = ct.models.MLModel(str(copy), compute_units=getattr(ct.ComputeUnit, compute_units))
            self._copy = stack.pop_all()
        spec = self.model.get_spec()
        img = spec.description.input[0].type.imageType
        self.height, self.width = img.height, img.width
        self.input_name, self.output_name = input_name, output_name
        self.threads = None
        self._lock = threading.Lock()  # Apple does not promise concurrent predictions on one MLModel

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if not on_macos():
            return False, "Core ML prediction needs macOS (Apple's runtime); using the coreml-reference runner"
        return True, ""

    @classmethod
    def from_artifact(cls, art: Artifact, manifest: Manifest, threads: int | None = None, *, spin: bool = True) -> Runner:
        """Core ML itself on macOS; elsewhere edgeseg's reference interpreter of the same package."""
        if on_macos():
            return cls(str(art.file), input_name=art.input["name"], output_name=art.output["name"])
        return CoreMLReferenceRunner(str(art.file))

    def run(self, images: np.ndarray) -> np.ndarray:
        from PIL import Image

        images = check_batch(images, self.height, self.width)
        with self._lock:  # safe to call from several threads, one at a time
            outs = [self.model.predict({self.input_name: Image.fromarray(img)})[self.output_name] for img in images]
        return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, *np.shape(o)[-3:]) for o in outs])

    def close(self) -> None:
        self.model = None
        self._copy.close()


class CoreMLReferenceRunner(Runner):
    """Evaluates the exported ML Program op by op with numpy (a reference, not Apple's runtime)."""

    runtime = "coreml-reference"
    formats = ("coreml",)
    latency_note = "not timed: Core ML prediction needs macOS; the numpy reference runner here checks parity only"

    def __init__(self, path: str):
        check_package(path)
        import_coremltools("reading Core ML models")
        with package_copy(path) as copy:  # the program holds its weights in memory once loaded
            self.program = CoreMLReferenceProgram.load(copy)
        self.threads = None

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.program.predict(images)
