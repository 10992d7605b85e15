"""edgeseg: MobileNet-based segmenters from training recipe to phone-ready files.

The Python API (``edgeseg.api``)::

    import edgeseg

    seg = edgeseg.load("default")             # a checkpoint, an exported file or an export dir too
    mask = seg.predict("photo.jpg")           # [H, W] uint8 class ids at the photo's size
    proba = seg.predict_proba("photo.jpg")    # [C, H, W] float32 probabilities
    metrics = seg.evaluate(count=50)          # the keys of `edgeseg eval --json`
    manifest = seg.export("out/default")      # ONNX, TFLite, Core ML files, parity-gated
    seg.predict_video("clip.mp4", "out/video", output="blur", smooth=True)   # the `video` extra
    edgeseg.export_module(net, "out/net", classes=["background", "person"], input_size=(256, 256),
                          mean=(127.5,) * 3, std=(127.5,) * 3)

Importing the package is cheap: the API (and PyTorch) load on first use of one of its names.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it, imported on first access (PEP 562)
_LAZY = {**dict.fromkeys(("load", "Segmenter", "FrameStream", "export_checkpoint", "export_module", "EXPORT_OPTIONS"),
                         "edgeseg.api"),
         **dict.fromkeys(("Manifest", "Artifact", "read_manifest"), "edgeseg.manifest"),
         **dict.fromkeys(("EdgesegError", "DataError", "CheckpointError", "ArtifactError", "MissingExtra", "GateFailed",
                          "ParityFailed"), "edgeseg.errors")}

__all__ = ["load", "Segmenter", "FrameStream", "export_checkpoint", "export_module", "EXPORT_OPTIONS",
           "Manifest", "Artifact", "read_manifest",
           "EdgesegError", "DataError", "CheckpointError", "ArtifactError", "MissingExtra", "GateFailed",
           "ParityFailed", "__version__"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (4 ms); type checkers read it as True
if TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    from edgeseg.api import EXPORT_OPTIONS, FrameStream, Segmenter, export_checkpoint, export_module, load
    from edgeseg.errors import (ArtifactError, CheckpointError, DataError, EdgesegError, GateFailed, MissingExtra,
                                ParityFailed)
    from edgeseg.manifest import Artifact, Manifest, read_manifest


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
