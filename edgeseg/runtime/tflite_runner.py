"""LiteRT (TFLite) interpreter Runner, XNNPACK on CPU: NHWC in/out, uint8 or float input."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgeseg.compat import native_notices_dropped
from edgeseg.errors import ArtifactError, require
from edgeseg.manifest import Artifact, Manifest
from edgeseg.runtime.base import Runner, check_batch, float_input


def _dequantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if x.dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    return (x.astype(np.float32) - zero) * scale


class TFLiteRunner(Runner):
    runtime = "litert"
    formats = ("tflite",)
    requires = ("ai_edge_litert.interpreter", "tflite")

    def __init__(self, path: str, *, mean, std, expects: str = "normalized", threads: int | None = None):
        litert = require(*self.requires, "running TFLite models")
        if Path(path).is_file() and Path(path).stat().st_size == 0:  # LiteRT would say no model was given
            raise ArtifactError(f"{path} is empty (0 bytes); re-export it")
        try:
            with native_notices_dropped():
                self.interp = litert.Interpreter(model_path=str(path), num_threads=threads or 1)
                self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{path}: LiteRT cannot load it ({str(exc).splitlines()[0][:160]})") from None
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        _, self.height, self.width, channels = self.inp["shape"]
        if channels != 3:
            raise ArtifactError(f"{path}: input shape {list(self.inp['shape'])} is not NHWC RGB")
        self.mean, self.std, self.expects, self.threads = mean, std, expects, threads
        self._lock = threading.Lock()  # one interpreter: set_tensor/invoke/get_tensor are not thread-safe

    def _feed(self, images: np.ndarray) -> np.ndarray:
        if self.inp["dtype"] == np.uint8:
            return images  # raw pixels; normalization is inside the graph
        return float_input(images, self.expects, self.mean, self.std).astype(self.inp["dtype"])

    @classmethod
    def from_artifact(cls, art: Artifact, manifest: Manifest, threads: int | None = None, *, spin: bool = True) -> "TFLiteRunner":
        return cls(str(art.file), mean=manifest.model["mean"], std=manifest.model["std"],
                   expects=art.input.get("expects", "normalized"), threads=threads)

    def run(self, images: np.ndarray) -> np.ndarray:
        """Safe to call from several threads: one call at a time uses the interpreter."""
        images = check_batch(images, self.height, self.width)
        x = self._feed(images)
        with self._lock:
            outs = [self._invoke(x[i:i + 1]) for i in range(len(x))]
        return np.ascontiguousarray(np.concatenate(outs).transpose(0, 3, 1, 2), dtype=np.float32)

    def _invoke(self, one: np.ndarray) -> np.ndarray:
        """One image through the interpreter (hold ``_lock``); the output is a copy (``get_tensor``)."""
        self.interp.set_tensor(self.inp["index"], one)
        self.interp.invoke()
        return _dequantize(self.interp.get_tensor(self.out["index"]), self.out)

    def close(self) -> None:
        with self._lock:  # after any run in progress
            self.interp = None
