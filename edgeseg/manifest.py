"""``manifest.json``: the single description of an export directory (layer 1).

Runners read it to know how to feed each file; nothing guesses from file suffixes. It is also
the export's integrity record: every file is used only after ``Artifact.verified_file`` has
checked that it lies inside the directory and that its bytes still match the listed sha256. The
parity reference stored beside the files (``parity_reference``, see ``edgeseg.bench.stored_reference``)
is listed and checked the same way (``Manifest.reference_file``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from pathlib import PurePosixPath, PureWindowsPath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import ArtifactError
from edgeseg.fsutil import write_text_atomic

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
FORMATS = ("onnx", "tflite", "coreml", "executorch")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage", "executorch": ".pte"}
REFERENCE_NAME = "parity-reference.npz"  # the stored parity reference (``Manifest.parity_reference``)

# A model's name becomes file names (``<name>-<precision><suffix>``): a plain file stem, so that no
# name can reach outside the folder it is written into; 100 ASCII characters keep every file name
# edgeseg derives from it (staging and .old names included) under the 255-byte limit.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
MODEL_NAME_RULE = ("a plain file name of at most 100 ASCII letters, digits, '.', '_' and '-', not starting with '.' "
                   "(it names the exported files)")


def is_model_name(name: object) -> bool:
    """True when ``name`` may name exported files (see ``MODEL_NAME_RULE``)."""
    return isinstance(name, str) and MODEL_NAME_PATTERN.fullmatch(name) is not None


class Record(dict):
    """A JSON object of the manifest: a dict (``parity["passed"]``) also readable by attribute
    (``parity.passed``, ``parity.stress.agreement_miou``); nested objects read as Records too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if type(value) is dict:
                dict.__setitem__(self, key, Record(value))

    def __getattr__(self, name: str):
        if name.startswith("__") or name not in self:
            raise AttributeError(f"no {name!r} in this record (keys: {', '.join(map(str, self)) or 'none'})")
        value = self[name]
        if type(value) is dict:  # set later as a plain dict: read it as a Record from now on
            value = Record(value)
            dict.__setitem__(self, name, value)
        return value


def as_record(value):
    """``value`` as a Record when it is a plain dict; anything else unchanged."""
    return Record(value) if type(value) is dict else value


_RECORD_FIELDS = frozenset({"input", "output", "details", "parity", "model", "tools", "parity_reference"})


class _RecordFields:
    """Dataclass mixin: the JSON-object fields named in ``_RECORD_FIELDS`` are stored as Records,
    whether given to the constructor or assigned later (``art.parity = {...}``)."""

    def __setattr__(self, name, value):
        super().__setattr__(name, as_record(value) if name in _RECORD_FIELDS else value)


@dataclass
class Artifact(_RecordFields):
    """One exported file and how to run it.

    ``input``, ``output``, ``details`` and ``parity`` are Records: ``art.parity.passed`` and
    ``art.parity["passed"]`` read the same value.
    """

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
        return verified_member(self.root or Path("."), self.path, self.sha256)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("root")
        return d


@dataclass
class Manifest(_RecordFields):
    """The contents of ``manifest.json``; ``model`` and ``tools`` are Records (dict and attribute access)."""

    model: dict
    tools: dict
    artifacts: list[Artifact] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    root: Path | None = field(default=None, repr=False)
    # the stored parity reference: {"path", "bytes", "sha256", ...}; None in exports made before it existed
    parity_reference: dict | None = None

    def to_dict(self) -> dict:
        d = {"schema_version": self.schema_version, "model": self.model, "tools": self.tools,
             "artifacts": [a.to_dict() for a in self.artifacts]}
        if self.parity_reference is not None:
            d["parity_reference"] = self.parity_reference
        return d

    def reference_file(self) -> Path:
        """The stored parity reference file, checked like every artifact (``verified_member``); ArtifactError
        naming the fix when this manifest lists none (an export made before edgeseg stored it) or it fails the check."""
        root = self.root or Path(".")
        if self.parity_reference is None:
            raise ArtifactError(f"{root / MANIFEST_NAME} lists no stored parity reference (the export predates it); "
                                f"re-export into {root} with this edgeseg to store one")
        return verified_member(root, self.parity_reference["path"], self.parity_reference["sha256"])

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` atomically into ``directory``."""
        return write_text_atomic(Path(directory) / MANIFEST_NAME, json.dumps(self.to_dict(), indent=2) + "\n")

    def find(self, fmt: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.format == fmt and a.precision == precision), None)

    def checkpoint_paths(self) -> list[Path]:
        """Where the checkpoint the files were exported from may be: its recorded absolute ``path``, then the path
        as it was typed (``given``, relative to the working directory: a checkout moved elsewhere). Callers check
        the sha256 ``model.checkpoint`` records before trusting either."""
        ckpt = self.model.get("checkpoint")
        if not isinstance(ckpt, dict):
            return []
        return [Path(str(ckpt[k])) for k in ("path", "given") if ckpt.get(k)]

    def model_identity(self) -> dict:
        """Which model the files were exported from: ``{"name", "sha256", "source", "network"}``.

        ``sha256`` is the checkpoint's, as recorded at export; for a manifest without one, the
        sha256 of its ``model`` section (``source`` says which). Same model, same identity,
        whichever directory it was exported into. ``network`` fingerprints what a file's speed
        depends on and its weights' values do not change (``NETWORK_KEYS``): a retrained or
        fine-tuned checkpoint of the same network has another ``sha256`` and the same ``network``.
        """
        ckpt = self.model.get("checkpoint")
        sha = ckpt.get("sha256") if isinstance(ckpt, dict) else None
        network = {k: self.model.get(k) for k in NETWORK_KEYS}
        network["classes"] = len(self.model.get("classes") or ())
        network = hashlib.sha256(_canonical_json(network)).hexdigest()
        if sha:
            return {"name": self.model.get("name"), "sha256": sha, "source": "checkpoint", "network": network}
        return {"name": self.model.get("name"), "sha256": hashlib.sha256(_canonical_json(self.model)).hexdigest(),
                "source": "manifest model", "network": network}


#: the ``model`` fields that make up a network's shape and input (the class names count only by number)
NETWORK_KEYS = ("architecture", "options", "classes", "input", "mean", "std", "params", "macs")


def _canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


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


def verified_member(root: Path, rel: object, sha256: object) -> Path:
    """``root / rel`` after checking that it exists, stays inside ``root`` (``member_path``) and that its
    sha256 is ``sha256``; ArtifactError naming the file and the fix otherwise."""
    path = member_path(root, rel)
    if not path.exists():
        raise ArtifactError(f"{path}: listed in {root / MANIFEST_NAME} but missing; re-export into {root}")
    digest = file_digest(path)[1]
    if digest != sha256:
        raise ArtifactError(f"{path}: sha256 {digest[:12]}... does not match {root / MANIFEST_NAME} "
                            f"({str(sha256)[:12]}...): the file was changed or replaced after export; "
                            "re-export, or restore the exported file")
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
    """Read ``directory/manifest.json``; ArtifactError naming the file on any problem.

    Refused too: a directory where an export's install did not finish (``fsutil.INSTALLING`` is there and the
    manifest is not the one that install was putting in place): its files may be newer than the manifest.
    The exporter reads an earlier manifest without this function (``export.pipeline``), so a re-export into
    such a directory, the fix, still works.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST_NAME} (is this an edgeseg export directory?)")
    from edgeseg.fsutil import INSTALLING, unfinished_install

    data = path.read_bytes()
    left = unfinished_install(directory)
    digest = hashlib.sha256(data).hexdigest()
    if left is not None and (left["files"] is None or left["files"].get(MANIFEST_NAME, digest) != digest):
        if left["running"]:
            raise ArtifactError(f"{directory}: an edgeseg run is installing files here now ({INSTALLING} is there); "
                                "try again when it has finished (or, if it was stopped, re-run the export into it)")
        raise ArtifactError(f"{directory}: an edgeseg run was stopped while installing files here ({INSTALLING} is "
                            "left, so its files may not match the manifest); re-run the export into it")
    try:
        raw: dict[str, Any] = json.loads(data.decode("utf-8"))
        arts = [Artifact(**{k: v for k, v in a.items()}, root=directory) for a in raw["artifacts"]]
        manifest = Manifest(model=raw["model"], tools=raw.get("tools", {}), artifacts=arts,
                            schema_version=raw.get("schema_version", 0), root=directory,
                            parity_reference=raw.get("parity_reference"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError: bad JSON or UTF-8
        raise ArtifactError(f"{path}: not a valid edgeseg manifest ({exc.__class__.__name__}: {exc})") from None
    problem = model_problem(manifest.model)
    if problem:
        raise ArtifactError(f"{path}: not a valid edgeseg manifest ({problem}); re-export, or fix the manifest")
    for a in arts:
        check_relative(a.path, path)
    problem = reference_problem(manifest.parity_reference)
    if problem:
        raise ArtifactError(f"{path}: 'parity_reference' {problem}; re-export, or fix the manifest")
    height, width = manifest.model["input"]["height"], manifest.model["input"]["width"]
    for a in arts:
        problem = artifact_problem(a, height, width)
        if problem:
            raise ArtifactError(f"{path}: artifact {a.path!r}: {problem}; re-export, or fix the manifest")
    return manifest


# ---------------------------------------------------------------------------------------------
# What every consumer reads from a manifest (and a checkpoint's ModelInfo): checked once, on read


def positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def class_names(v: object) -> bool:
    """A non-empty list of distinct, non-empty class names."""
    return (isinstance(v, (list, tuple)) and len(v) >= 1 and all(isinstance(c, str) and c.strip() for c in v)
            and len(set(v)) == len(v))


def channel_values(v: object, *, positive: bool = False) -> bool:
    """Three finite numbers (R, G, B), each > 0 when ``positive``."""
    return (isinstance(v, (list, tuple)) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and (x > 0 or not positive)
                    for x in v))


MODEL_RULES = {
    "name": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
    "classes": (class_names, "a non-empty list of distinct class names"),
    "input.height": (positive_int, "an integer >= 1"),
    "input.width": (positive_int, "an integer >= 1"),
    "mean": (channel_values, "three finite numbers (0-255 pixel units)"),
    "std": (lambda v: channel_values(v, positive=True), "three finite numbers > 0 (0-255 pixel units)"),
}
LAYOUTS = {"NCHW": (2, 3), "NHWC": (1, 2)}  # layout -> positions of (height, width) in the input shape
_MISSING = object()


def shown(v: object, limit: int = 60) -> str:
    """``repr(v)``, cut to ``limit`` characters for a one-line message."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _lookup(tree: object, dotted: str) -> object:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def model_problem(model: object) -> str:
    """What is wrong with a manifest's ``model`` section, naming the key; '' when every key that Runners
    and consumers read (``MODEL_RULES``) is there with a usable value."""
    if not isinstance(model, dict):
        return "'model' is not an object"
    for key, (check, valid) in MODEL_RULES.items():
        value = _lookup(model, key)
        if value is _MISSING:
            return f"'model.{key}' is missing"
        if not check(value):
            return f"'model.{key}' is {shown(value)}; it must be {valid}"
    return ""


def reference_problem(entry: object) -> str:
    """What is wrong with a manifest's ``parity_reference`` entry ('' when nothing, or when there is none):
    it must name a plain relative ``path`` inside the directory and its ``sha256``."""
    if entry is None:
        return ""
    if not isinstance(entry, dict):
        return "is not an object"
    if not isinstance(entry.get("sha256"), str):
        return "has no sha256"
    try:
        check_relative(entry.get("path"), Path(MANIFEST_NAME))
    except ArtifactError:
        return f"path {shown(entry.get('path'))} leaves the export directory"
    return ""


def artifact_problem(art: Artifact, height: int, width: int) -> str:
    """What is wrong with one artifact entry's input/output description ('' when nothing): its input
    must be a 4-d NCHW or NHWC shape whose height and width are the model's ``height`` x ``width``."""
    if not isinstance(art.input, dict) or not isinstance(art.output, dict):
        return "'input' and 'output' must be objects"
    layout, shape = art.input.get("layout"), art.input.get("shape")
    if layout not in LAYOUTS:
        return f"input layout {shown(layout)} is not NCHW or NHWC"
    if not (isinstance(shape, list) and len(shape) == 4):
        return f"input shape {shown(shape)} is not a list of 4 dimensions"
    h, w = (shape[i] for i in LAYOUTS[layout])
    if [h, w] != [height, width]:
        return (f"input shape {shown(shape)} ({layout}) is {h}x{w} (height x width) but model.input is "
                f"{height}x{width}")
    return ""


def find_artifact_for_file(path: str | Path) -> tuple[Manifest, Artifact]:
    """The manifest entry describing an exported file, read from the manifest beside it."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"model file not found: {path}")
    if path.is_dir() and path.suffix not in SUFFIXES.values():
        raise ArtifactError(f"{path}: no {MANIFEST_NAME} (is this an edgeseg export directory?); give the folder "
                            "'edgeseg export' wrote, or re-export")
    if not (path.parent / MANIFEST_NAME).is_file():
        raise ArtifactError(f"{path}: no {MANIFEST_NAME} beside it; edgeseg reads an exported file's input size, "
                            "normalization and classes from its export folder's manifest: keep the file with the "
                            f"{MANIFEST_NAME} it was exported with (copy both), or give the export folder")
    manifest = read_manifest(path.parent)
    for a in manifest.artifacts:
        if a.path == path.name:
            return manifest, a
    listed = path.parent / MANIFEST_NAME
    try:  # a renamed (or copied) exported file: the manifest records every file's sha256 (and size: hash only then)
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        same = [a for a in manifest.artifacts if a.bytes == size]
        digest = file_digest(path)[1] if same else None
    except OSError:
        same, digest = [], None
    match = next((a for a in same if a.sha256 == digest), None)
    why = "the manifest, parity reference and bench find files by their exported names"
    if match is not None and (path.parent / match.path).exists():
        raise ArtifactError(f"{path}: not listed in {listed}; it holds the bytes of {match.path!r}, which is there: "
                            f"give {path.parent / match.path} instead ({why})")
    if match is not None:
        raise ArtifactError(f"{path}: not listed in {listed}; it holds the bytes of {match.path!r}: rename it back "
                            f"to {match.path} ({why})")
    raise ArtifactError(f"{path}: not listed in {listed}; give a file listed there, or the export folder "
                        f"{path.parent}")
