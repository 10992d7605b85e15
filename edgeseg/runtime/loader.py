"""Open any model a user names: a checkpoint, an exported file, or an export directory (layer 2).

Exported files are described by the ``manifest.json`` beside them; the manifest's format
picks the Runner. Runners register here by format.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeseg.errors import ArtifactError, EdgesegError
from edgeseg.manifest import MANIFEST_NAME, Artifact, Manifest, find_artifact_for_file, read_manifest
from edgeseg.models.checkpoint import resolve_checkpoint
from edgeseg.runtime.base import Runner


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
    task: str  # built-in synthetic task matching the classes


# format -> factory(artifact, manifest, threads, spin) -> Runner; filled by each runner module
RUNNER_FACTORIES: dict[str, Callable[[Artifact, Manifest, int | None, bool], Runner]] = {}


def synth_task_for(classes) -> str:
    from edgeseg.data.synth import PARTS_CLASSES

    return "parts" if tuple(classes) == tuple(PARTS_CLASSES) else "portrait"


def _register_builtin() -> None:
    from edgeseg.runtime import registry  # noqa: F401  (imports runner modules, which register)


def view_of_manifest(manifest: Manifest, art: Artifact) -> ModelView:
    m = manifest.model
    return ModelView(m["name"], tuple(m["classes"]), (int(m["input"]["height"]), int(m["input"]["width"])),
                     tuple(m["mean"]), tuple(m["std"]), str(art.file), art.format, art.precision, synth_task_for(m["classes"]))


def runner_for_artifact(art: Artifact, manifest: Manifest, threads: int | None = None, *, spin: bool = True) -> Runner:
    """The Runner for one manifest entry; EdgesegError saying why when its runtime is missing.

    The file is opened only after ``Artifact.verified_file`` (inside the export directory, sha256
    as listed), so every consumer (predict, eval, bench, export's parity check) runs what the
    manifest describes or stops with ArtifactError.

    ``spin=False`` asks runtimes that busy-wait between runs (ONNX Runtime's thread pool) not
    to, so a second session timed next to this one gets the CPU; others ignore it.
    """
    _register_builtin()
    factory = RUNNER_FACTORIES.get(art.format)
    if factory is None:
        raise ArtifactError(f"{art.path}: no runner for format {art.format!r}")
    art.verified_file()
    return factory(art, manifest, threads, spin)


def open_model(spec: str | None, *, threads: int | None = None, pick: str | None = None) -> tuple[Runner, ModelView]:
    """A Runner and its ModelView for a checkpoint path, 'default', an exported file or an export dir.

    For an export directory ``pick`` selects 'format:precision' (default: the first artifact);
    for anything else it is refused rather than ignored.
    """
    path = None if spec in (None, "default") else Path(spec)
    if path is not None and path.is_dir() and (path / MANIFEST_NAME).is_file():
        manifest = read_manifest(path)
        art = _pick(manifest, pick)
        return runner_for_artifact(art, manifest, threads), view_of_manifest(manifest, art)
    if pick is not None:
        raise EdgesegError(f"--artifact {pick} picks a file of an export directory, but {spec or 'default'} is not one; "
                           "drop --artifact or name the export directory")
    if path is not None and path.suffix in (".onnx", ".tflite", ".mlpackage"):
        manifest, art = find_artifact_for_file(path)
        return runner_for_artifact(art, manifest, threads), view_of_manifest(manifest, art)
    if path is not None and not path.exists():
        raise EdgesegError(f"model not found: {path}")
    from edgeseg.runtime.torch_runner import TorchRunner

    ckpt = resolve_checkpoint(spec)
    info = ckpt.info
    task = str(ckpt.recipe.get("data", {}).get("task") or synth_task_for(info.classes))
    view = ModelView(info.name, info.classes, info.input_size, info.mean, info.std, str(ckpt.path), "checkpoint", "fp32", task)
    return TorchRunner.from_checkpoint(ckpt, threads), view


def _pick(manifest: Manifest, pick: str | None) -> Artifact:
    if not manifest.artifacts:
        raise ArtifactError(f"{manifest.root}: the manifest lists no artifacts")
    if pick is None:
        return manifest.artifacts[0]
    fmt, _, prec = pick.partition(":")
    for a in manifest.artifacts:
        if a.format == fmt and (not prec or a.precision == prec):
            return a
    raise EdgesegError(f"{manifest.root}: no artifact {pick!r}; have {', '.join(f'{a.format}:{a.precision}' for a in manifest.artifacts)}")
