"""ONNX Runtime Runner (CPU execution provider)."""
from __future__ import annotations

import numpy as np

from edgeseg.errors import ArtifactError, require
from edgeseg.manifest import Artifact, Manifest
from edgeseg.runtime.base import Runner, check_batch, float_input_nchw


class OnnxRunner(Runner):
    runtime = "onnxruntime"
    formats = ("onnx",)
    requires = ("onnxruntime", "onnx")

    def __init__(self, path: str, *, input_size, mean, std, expects: str = "normalized", threads: int | None = None,
                 spin: bool = True):
        ort = require(*self.requires, "running ONNX models")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if not spin:  # pool threads sleep right after a run instead of busy-waiting for the next one
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf types
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:160]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.height, self.width = input_size
        self.mean, self.std, self.expects, self.threads = mean, std, expects, threads

    @classmethod
    def from_artifact(cls, art: Artifact, manifest: Manifest, threads: int | None = None, *, spin: bool = True) -> "OnnxRunner":
        m = manifest.model
        return cls(str(art.file), input_size=(m["input"]["height"], m["input"]["width"]), mean=m["mean"], std=m["std"],
                   expects=art.input.get("expects", "normalized"), threads=threads, spin=spin)

    def run(self, images: np.ndarray) -> np.ndarray:
        images = check_batch(images, self.height, self.width)
        x = float_input_nchw(images, self.expects, self.mean, self.std)
        outs = [self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))]
        return (outs[0] if len(outs) == 1 else np.concatenate(outs)).astype(np.float32, copy=False)
