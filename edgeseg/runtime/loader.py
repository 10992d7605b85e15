"""Open any model a user names: a checkpoint, an exported file, or an export directory (layer 2).

Exported files are described by the ``manifest.json`` beside them; the manifest's format
picks the Runner: ``RUNNERS`` names, per format, the class that opens it, imported only when a
file of that format is opened (a runtime that is not installed costs nothing until then).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import importlib

from edgeseg.errors import ArtifactError, EdgesegError, MissingExtra
from edgeseg.manifest import FORMATS, MANIFEST_NAME, SUFFIXES, Artifact, Manifest, find_artifact_for_file, read_manifest
from edgeseg.models.checkpoint import Checkpoint, is_packaged, resolve_checkpoint
from edgeseg.recipe import DataCfg, val_fraction_or_default
from edgeseg.runtime.base import Runner

#: An export directory's files from the most faithful to the PyTorch model down (see ``ranked``).
PRECISION_ORDER = ("fp32", "fp16", "int8", "pal6")


@dataclass(frozen=True)
class ModelView:
    """What a consumer needs to feed and read a model, whatever its format."""

    name: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # checkpoint path or exported file
    format: str  # checkpoint | onnx | tflite | coreml
    precision: str
    task: str | None  # the built-in synthetic set whose classes are the model's; None: none is (no guessing)
    val_fraction: float = DataCfg.val_fraction  # a split-less --data folder's 'val' share (the training run's)


@dataclass
class LoadedModel:
    """An open Runner, its ModelView, and what it was opened from: the checkpoint of a PyTorch
    model, or the manifest entry of an exported file."""

    runner: Runner
    view: ModelView
    checkpoint: Checkpoint | None = None
    manifest: Manifest | None = None
    artifact: Artifact | None = None


#: format -> "module:Class" of the Runner whose ``from_artifact`` opens a file of that format.
RUNNERS = {
    "onnx": "edgeseg.runtime.onnx_runner:OnnxRunner",
    "tflite": "edgeseg.runtime.tflite_runner:TFLiteRunner",
    "coreml": "edgeseg.runtime.coreml_runner:CoreMLRunner",
    "executorch": "edgeseg.runtime.executorch_runner:ExecuTorchRunner",
}


def synth_task_for(classes) -> str | None:
    """The built-in synthetic task whose class list is exactly ``classes``; None when none is.

    A built-in set scores a model only when its labels mean what the model's outputs mean: a
    21-class VOC model is never scored on the 2-class portrait set.
    """
    from edgeseg.data.synth import TASKS

    return next((task for task, names in TASKS.items() if tuple(names) == tuple(classes)), None)


def runner_class(fmt: str) -> type[Runner]:
    """The Runner class for a format (its module imported now); ArtifactError for an unknown format."""
    if fmt not in RUNNERS:
        raise ArtifactError(f"no runner for format {fmt!r}; known: {', '.join(RUNNERS)}")
    module, _, name = RUNNERS[fmt].partition(":")
    return getattr(importlib.import_module(module), name)


def view_of_manifest(manifest: Manifest, art: Artifact) -> ModelView:
    m = manifest.model
    return ModelView(m["name"], tuple(m["classes"]), (int(m["input"]["height"]), int(m["input"]["width"])),
                     tuple(m["mean"]), tuple(m["std"]), str(art.file), art.format, art.precision, synth_task_for(m["classes"]),
                     val_fraction_or_default(m.get("val_fraction")))


def runner_for_artifact(art: Artifact, manifest: Manifest, threads: int | None = None, *, spin: bool = True) -> Runner:
    """The Runner for one manifest entry; EdgesegError saying why when its runtime is missing.

    The file is opened only after ``Artifact.verified_file`` (inside the export directory, sha256
    as listed), so every consumer (predict, eval, bench, export's parity check) runs what the
    manifest describes or stops with ArtifactError.

    ``spin=False`` asks runtimes that busy-wait between runs (ONNX Runtime's thread pool) not
    to, so a second session timed next to this one gets the CPU; others ignore it.
    """
    if art.format not in RUNNERS:
        raise ArtifactError(f"{art.path}: no runner for format {art.format!r}")
    art.verified_file()
    return runner_class(art.format).from_artifact(art, manifest, threads, spin=spin)


def open_model(spec: str | None, *, threads: int | None = None, pick: str | None = None) -> tuple[Runner, ModelView]:
    """A Runner and its ModelView for a checkpoint path, 'default', an exported file or an export dir
    (``load_model``, for callers that need nothing else)."""
    loaded = load_model(spec, threads=threads, pick=pick)
    return loaded.runner, loaded.view


def load_model(spec: str | None, *, threads: int | None = None, pick: str | None = None) -> LoadedModel:
    """Open a checkpoint path, 'default' or 'parts' (the packaged models), an exported file or an export dir.

    For an export directory ``pick`` selects 'FORMAT[:PRECISION]' (either part may be empty:
    ':int8' is the best int8 file); among the files it allows, the first in ``ranked`` order whose
    runtime is installed is opened. For anything else ``pick`` is refused rather than ignored.
    """
    path = None if is_packaged(spec) else Path(spec)
    if path is not None and path.name == MANIFEST_NAME and path.is_file():
        path = path.parent  # an export's manifest: the export it describes
    if path is not None and path.is_dir() and (path / MANIFEST_NAME).is_file():
        manifest = read_manifest(path)
        return _open_first(manifest, _candidates(manifest, pick), threads)
    if pick is not None:
        raise EdgesegError(f"--artifact {pick} picks a file of an export directory, but {spec or 'default'} is not one; "
                           "drop --artifact or name the export directory")
    if path is not None and path.suffix in SUFFIXES.values():
        manifest, art = find_artifact_for_file(path)
        return _open_first(manifest, [art], threads)
    if path is not None and not path.exists():
        raise EdgesegError(f"model not found: {path}")
    from edgeseg.runtime.torch_runner import TorchRunner

    ckpt = resolve_checkpoint(spec)
    info = ckpt.info
    view = ModelView(info.name, info.classes, info.input_size, info.mean, info.std, str(ckpt.path), "checkpoint", "fp32",
                     synth_task_for(info.classes), ckpt.val_fraction)
    return LoadedModel(TorchRunner.from_checkpoint(ckpt, threads), view, checkpoint=ckpt)


def ranked(artifacts: list[Artifact]) -> list[Artifact]:
    """Most faithful first: files whose parity passed, then those not checked, then those that failed;
    within each, by precision (``PRECISION_ORDER``), then by format (``FORMATS``: ONNX, TFLite, Core ML)."""
    def key(a: Artifact):
        passed = a.parity.get("passed")
        order = {True: 0, None: 1}.get(passed, 2)
        return (order, _index(PRECISION_ORDER, a.precision), _index(FORMATS, a.format))
    return sorted(artifacts, key=key)


def _index(order: tuple[str, ...], value: str) -> int:
    return order.index(value) if value in order else len(order)


def _open_first(manifest: Manifest, candidates: list[Artifact], threads: int | None) -> LoadedModel:
    """The first candidate whose runtime is installed, opened; the first one's MissingExtra if none is. A listed
    file that is absent is an ArtifactError that also names the files that are there (a folder holding one
    exported file and its manifest opens with ``--artifact`` naming it)."""
    missing = None
    for art in candidates:
        try:
            runner = runner_for_artifact(art, manifest, threads)
        except MissingExtra as exc:
            missing = missing or exc
            continue
        except ArtifactError as exc:
            raise _with_present_files(exc, art, manifest) from None
        return LoadedModel(runner, view_of_manifest(manifest, art), manifest=manifest, artifact=art)
    raise missing


def _with_present_files(exc: ArtifactError, art: Artifact, manifest: Manifest) -> ArtifactError:
    present = [a for a in manifest.artifacts if a.file.is_file()]
    if art.file.exists() or not present:
        return exc
    picks = " or ".join(f"--artifact {a.format}:{a.precision}" for a in present[:3])
    return ArtifactError(f"{exc}, or open a file that is there: {picks} (Python: load(..., format=, precision=))")


def split_pick(pick: str | None) -> tuple[str, str]:
    """(format, precision) of an ``--artifact`` pick: 'FORMAT[:PRECISION]', ':PRECISION' or 'PRECISION' ('' = any)."""
    fmt, _, prec = (f":{pick}" if pick in PRECISION_ORDER else pick or "").partition(":")
    return fmt, prec


def _candidates(manifest: Manifest, pick: str | None) -> list[Artifact]:
    """The files ``pick`` ('FORMAT[:PRECISION]', ':PRECISION' or 'PRECISION'; None = any) allows, in ``ranked``
    order; EdgesegError if none."""
    if not manifest.artifacts:
        raise ArtifactError(f"{manifest.root}: the manifest lists no artifacts")
    fmt, prec = split_pick(pick)
    found = [a for a in manifest.artifacts if (not fmt or a.format == fmt) and (not prec or a.precision == prec)]
    if not found:
        raise EdgesegError(f"{manifest.root}: no artifact {pick!r}; have "
                           f"{', '.join(f'{a.format}:{a.precision}' for a in manifest.artifacts)}")
    return ranked(found)
