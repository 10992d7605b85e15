"""``manifest.json``: the single description of an export directory (layer 1).

Runners read it to know how to feed each file; nothing guesses from file suffixes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import ArtifactError
from edgeseg.fsutil import write_text_atomic

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
FORMATS = ("onnx", "tflite", "coreml")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}


@dataclass
class Artifact:
    """One exported file and how to run it."""

    format: str
    precision: str
    path: str  # relative to the export directory
    bytes: int
    sha256: str
    input: dict  # name, shape, dtype, layout NCHW|NHWC, expects pixels|normalized, quantization
    output: dict  # name, shape, dtype, layout, quantization
    quantized: str = "nothing"
    details: dict = field(default_factory=dict)  # format-specific facts (e.g. xnnpack partitions)
    parity: dict = field(default_factory=dict)
    root: Path | None = field(default=None, repr=False, compare=False)

    @property
    def file(self) -> Path:
        """Absolute path of the file (needs ``root``, set when read from a manifest)."""
        return (self.root or Path(".")) / self.path

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("root")
        return d


@dataclass
class Manifest:
    model: dict
    tools: dict
    artifacts: list[Artifact] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    root: Path | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "model": self.model, "tools": self.tools,
                "artifacts": [a.to_dict() for a in self.artifacts]}

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` atomically into ``directory``."""
        return write_text_atomic(Path(directory) / MANIFEST_NAME, json.dumps(self.to_dict(), indent=2) + "\n")

    def find(self, fmt: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.format == fmt and a.precision == precision), None)


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, or of every file in a folder (e.g. .mlpackage)."""
    h = hashlib.sha256()
    total = 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        data = f.read_bytes()
        total += len(data)
        h.update(data)
    return total, h.hexdigest()


def read_manifest(directory: str | Path) -> Manifest:
    """Read ``directory/manifest.json``; ArtifactError naming the file on any problem."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST_NAME} (is this an edgeseg export directory?)")
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        arts = [Artifact(**{k: v for k, v in a.items()}, root=directory) for a in raw["artifacts"]]
        return Manifest(model=raw["model"], tools=raw.get("tools", {}), artifacts=arts,
                        schema_version=raw.get("schema_version", 0), root=directory)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: not a valid edgeseg manifest ({exc.__class__.__name__}: {exc})") from None


def find_artifact_for_file(path: str | Path) -> tuple[Manifest, Artifact]:
    """The manifest entry describing an exported file, read from the manifest beside it."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"model file not found: {path}")
    manifest = read_manifest(path.parent)
    for a in manifest.artifacts:
        if a.path == path.name:
            return manifest, a
    raise ArtifactError(f"{path}: not listed in {path.parent / MANIFEST_NAME}")
