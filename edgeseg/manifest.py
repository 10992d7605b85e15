"""``manifest.json``: the single description of an export directory (layer 1).

Runners read it to know how to feed each file; nothing guesses from file suffixes. It is also
the export's integrity record: every file is used only after ``Artifact.verified_file`` has
checked that it lies inside the directory and that its bytes still match the listed sha256.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import PurePosixPath, PureWindowsPath
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
        """Where the file is (``root`` / ``path``; ``root`` is set when read from a manifest). Not checked:
        open it through ``verified_file``."""
        return (self.root or Path(".")) / self.path

    def verified_file(self) -> Path:
        """``file``, after checking that it exists, stays inside the export directory (no symlink out)
        and that its sha256 matches this entry; ArtifactError naming the file and the fix otherwise.

        Each file is hashed once per process while it stays unchanged (see ``file_digest``).
        """
        root = self.root or Path(".")
        path = member_path(root, self.path)
        if not path.exists():
            raise ArtifactError(f"{path}: listed in {root / MANIFEST_NAME} but missing; re-export into {root}")
        digest = file_digest(path)[1]
        if digest != self.sha256:
            raise ArtifactError(f"{path}: sha256 {digest[:12]}... does not match {root / MANIFEST_NAME} "
                                f"({str(self.sha256)[:12]}...): the file was changed or replaced after export; "
                                "re-export, or restore the exported file")
        return path

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

    def model_identity(self) -> dict:
        """Which model the files were exported from: ``{"name", "sha256", "source"}``.

        ``sha256`` is the checkpoint's, as recorded at export; for a manifest without one, the
        sha256 of its ``model`` section (``source`` says which). Same model, same identity,
        whichever directory it was exported into.
        """
        ckpt = self.model.get("checkpoint")
        sha = ckpt.get("sha256") if isinstance(ckpt, dict) else None
        if sha:
            return {"name": self.model.get("name"), "sha256": sha, "source": "checkpoint"}
        section = json.dumps(self.model, sort_keys=True, separators=(",", ":"), default=str).encode()
        return {"name": self.model.get("name"), "sha256": hashlib.sha256(section).hexdigest(), "source": "manifest model"}


def check_relative(rel: object, where: Path) -> str:
    """``rel`` when it is a plain relative path inside the export directory (not absolute, no '..',
    no Windows drive or backslash); ArtifactError naming ``where`` (the manifest) otherwise."""
    if not (isinstance(rel, str) and rel.strip(".") and "\\" not in rel and not PureWindowsPath(rel).drive
            and not PurePosixPath(rel).is_absolute() and ".." not in PurePosixPath(rel).parts):
        raise ArtifactError(f"{where}: artifact path {rel!r} leaves the export directory; paths must be relative to it "
                            "without '..' (re-export, or fix the manifest)")
    return rel


def member_path(root: Path, rel: object) -> Path:
    """``root / rel``, refused (ArtifactError) when ``rel`` is not a plain relative path or when it, or
    anything inside it (an .mlpackage's files), resolves through a symlink to outside ``root``."""
    path = Path(root) / check_relative(rel, Path(root) / MANIFEST_NAME)
    top = Path(root).resolve()
    inner = sorted(path.rglob("*")) if path.is_dir() else []
    for p in [path, *inner]:
        target = p.resolve()
        if not target.is_relative_to(top):
            raise ArtifactError(f"{p}: resolves to {target}, outside the export directory {root}; "
                                "copy the file into the directory instead of linking to it")
    return path


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, or of every file in a folder (e.g. .mlpackage).

    Cached per process: a file (or folder) is read again only when one of its files' size, mtime,
    ctime or inode changed, so verifying an export on every load hashes each file once.
    """
    path = Path(os.path.abspath(path))
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamps = tuple((str(f), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for f, st in ((f, f.stat()) for f in files))
    return _digest(str(path), path.is_dir(), stamps)


@functools.lru_cache(maxsize=256)
def _digest(root: str, is_dir: bool, stamps: tuple) -> tuple[int, str]:
    h = hashlib.sha256()
    total = 0
    for name, *_ in stamps:
        if is_dir:
            h.update(str(Path(name).relative_to(root)).encode())
        data = Path(name).read_bytes()
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
        manifest = Manifest(model=raw["model"], tools=raw.get("tools", {}), artifacts=arts,
                            schema_version=raw.get("schema_version", 0), root=directory)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError: bad JSON or UTF-8
        raise ArtifactError(f"{path}: not a valid edgeseg manifest ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(manifest.model, dict):
        raise ArtifactError(f"{path}: not a valid edgeseg manifest ('model' is not an object)")
    for a in arts:
        check_relative(a.path, path)
    return manifest


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
