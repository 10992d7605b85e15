"""``edgeseg export``: one model -> every (format, precision) file + manifest, parity-gated.

The model is a checkpoint, or any module the Python API was given (``export.source``).

Everything is written into a staging folder and installed at the end, the manifest last, so an
interrupted or failed export never leaves a directory that looks complete. The parity reference
(the PyTorch outputs every file was checked against) is written into the same staging folder and
listed in the manifest, so the directory is self-contained (``edgeseg.bench.stored_reference``).
A file its runtime cannot run fails its parity with the reason; the other files are kept. edgeseg only replaces
what it wrote: in an existing ``--out`` folder only the files of an earlier export (those its
manifest lists) are replaced or removed; anything else there is kept, and a non-empty folder that
is not an earlier export is refused unless ``force``.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgeseg import __version__
from edgeseg.bench.gate import parity_problem
from edgeseg.bench.parity import cannot_run, check_parity, reference_set, skipped, stress_set
from edgeseg.bench.stored_reference import store_reference
from edgeseg.errors import ArtifactError, EdgesegError, MissingExtra, require
from edgeseg.export.base import CALIBRATED_PRECISION, EXPORTERS, ExportJob, embedded_metadata
from edgeseg.export.quant_images import calibration_images, check_folder, parity_source
from edgeseg.fsutil import being_installed, check_output, install_staged, is_staging, staging_dir
from edgeseg.manifest import MANIFEST_NAME, REFERENCE_NAME, SUFFIXES, Artifact, Manifest, file_digest
from edgeseg.export.source import ExportSource, checkpoint_source
from edgeseg.models.checkpoint import resolve_checkpoint
from edgeseg.recipe import CALIB_METHODS, FORMATS, STRESS_MODES, ExportCfg
from edgeseg.runtime.loader import runner_for_artifact
from edgeseg.runtime.torch_runner import TorchRunner
from edgeseg.ui import folded_output

TOOL_PACKAGES = ("torch", "torchvision", "timm", "onnx", "onnxscript", "onnxruntime", "litert-torch", "ai-edge-litert",
                 "ai-edge-quantizer", "mediapipe", "coremltools", "executorch", "torchao")


@dataclass
class ExportRequest:
    """What to export and how. A field left None (or a threshold not named) takes the model's recipe
    ``export:`` section, else ``ExportCfg``'s default: see ``resolved``."""

    checkpoint: str | None = None
    out_dir: str = "out/default"
    formats: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    calib_dir: str | None = None
    data_dir: str | None = None
    calib_count: int | None = None
    parity_images: int | None = None
    thresholds: dict = field(default_factory=dict)  # precision -> minimum agreement, over the defaults
    max_gt_drop: float | None = None  # mIoU points
    force: bool = False  # write into a non-empty folder that is not an earlier export
    stress_thresholds: dict = field(default_factory=dict)
    stress: str | None = None  # stress set (corruptions + real photos): "gate" | "report" (measured, not gated) | "off"
    calib_method: str | None = None  # METHOD, FORMAT=METHOD,... or both (see calib_methods_for)
    verbose: bool = False  # show the converters' own output (else folded away: ``converter_output``)

    def resolved(self, cfg: ExportCfg) -> "ExportRequest":
        """This request with every unset field taken from ``cfg`` (the recipe's export section or the defaults)."""
        unset = {k: getattr(cfg, k) for k in ("formats", "precisions", "calib_count", "parity_images", "max_gt_drop",
                                                "stress", "calib_method") if getattr(self, k) is None}
        return replace(self, **unset, thresholds={**cfg.thresholds, **self.thresholds},
                       stress_thresholds={**cfg.stress_thresholds, **self.stress_thresholds})


@dataclass
class ExportResult:
    manifest: Manifest
    out_dir: Path

    @property
    def failed(self) -> list[Artifact]:
        return [a for a in self.manifest.artifacts if a.parity.get("passed") is False]

    def failure_message(self) -> str:
        """One line naming each failed file and why: below its threshold, or its runtime cannot run it."""
        return "; ".join(f"{a.path}: {parity_problem(a.parity)}" for a in self.failed)


def tool_versions() -> dict:
    """Installed versions of the packages that shape exported files."""
    out = {"edgeseg": __version__}
    for name in TOOL_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _check_list(option: str, values) -> None:
    if not values:
        raise EdgesegError(f"{option} is empty; give a comma-separated list")
    dups = sorted({v for v in values if list(values).count(v) > 1})
    if dups:
        raise EdgesegError(f"{option} lists {', '.join(dups)} more than once; give each once")


def load_exporters(formats, precisions) -> dict:
    """Instantiate each format's exporter; reject empty or repeated lists, unknown formats and unsupported pairs up front."""
    from edgeseg.export import coreml, executorch, onnx, tflite  # noqa: F401  (register exporters)

    _check_list("--formats", formats)
    _check_list("--precisions", precisions)
    out = {}
    for fmt in formats:
        if fmt not in EXPORTERS:
            raise EdgesegError(f"unknown format {fmt!r}; choose from {', '.join(EXPORTERS)}")
        exporter = EXPORTERS[fmt]()
        for p in precisions:
            if p not in exporter.precisions:
                raise EdgesegError(f"{fmt} export does not support precision {p!r}; supported: {', '.join(exporter.precisions)}")
        out[fmt] = exporter
    return out


def calib_methods_for(spec: str, exporters: dict, precisions) -> dict[str, str]:
    """``--calib-method`` -> {format: method} for each format whose int8 file this export calibrates.

    ``spec`` is one method for all of them (``percentile``), per-format choices (``onnx=entropy``), or
    both (``entropy,tflite=minmax``); a format it does not name takes the default
    (``ExportCfg.calib_method``, the recipe's). A method a format's quantizer does not offer, or a named format
    that calibrates nothing in this export, is an EdgesegError, raised before any work.
    """
    items = [item.strip() for item in str(spec).split(",") if item.strip()]
    if not items:
        raise EdgesegError(f"--calib-method is empty; give a method ({', '.join(CALIB_METHODS)}) or FORMAT=METHOD")
    calibrated = calibrated_exporters(exporters, precisions)
    overall, chosen = [], {}
    for item in items:
        fmt, named, method = (part.strip() for part in item.rpartition("="))
        if method not in CALIB_METHODS:
            raise EdgesegError(f"--calib-method {item}: unknown calibration method {method!r}; "
                               f"choose from {', '.join(CALIB_METHODS)}")
        if not named:
            overall.append(method)
        elif fmt in chosen:
            raise EdgesegError(f"--calib-method {spec}: {fmt} is given more than once; give each format once")
        elif fmt not in calibrated:
            why = (f"unknown format {fmt!r}; choose from {', '.join(EXPORTERS)}" if fmt not in EXPORTERS else
                   f"{fmt} files are never calibrated on images (their int8 compresses weights only); drop {item}"
                   if not EXPORTERS[fmt].calib_methods else
                   f"{fmt} is not in --formats; add {fmt} to --formats, or drop {item}" if fmt not in exporters else
                   _no_calibrated_file(exporters, precisions, drop=item))
            raise EdgesegError(f"--calib-method {item}: {why}")
        else:
            chosen[fmt] = method
    if len(overall) > 1:
        raise EdgesegError(f"--calib-method {spec}: more than one method for all formats; "
                           "give one, and FORMAT=METHOD for the exceptions")
    default = overall[0] if overall else ExportCfg.calib_method
    methods = {fmt: chosen.get(fmt, default) for fmt in calibrated}
    for fmt, method in methods.items():
        offered = calibrated[fmt].calib_methods
        if method not in offered:
            others = [f for f in methods if f != fmt and method in calibrated[f].calib_methods]
            if fmt not in chosen and others and ExportCfg.calib_method in offered:
                fix = (f"use --calib-method {','.join(f'{o}={method}' for o in others)} "
                       f"({fmt} keeps {ExportCfg.calib_method}) or drop {fmt} from --formats")
            else:
                fix = f"choose {' or '.join(offered)} for {fmt}, or drop {fmt} from --formats"
            raise EdgesegError(f"--calib-method {spec}: {fmt} {CALIBRATED_PRECISION} calibration offers only "
                               f"{', '.join(offered)}, not {method}; {fix}")
    return methods


def _no_calibrated_file(exporters: dict, precisions, *, drop: str) -> str:
    """Why no file of this export is calibrated on images, and the fix (add what would be, or ``drop``)."""
    if CALIBRATED_PRECISION not in precisions:
        return (f"--precisions has no {CALIBRATED_PRECISION}, the only calibrated precision; add {CALIBRATED_PRECISION} "
                f"to --precisions, or drop {drop}")
    calibrating = [f for f in FORMATS if f in EXPORTERS and EXPORTERS[f].calib_methods]
    return (f"no format in --formats ({', '.join(exporters)}) calibrates its {CALIBRATED_PRECISION} file on images; "
            f"add {' or '.join(calibrating)} to --formats, or drop {drop}")


def calibrated_exporters(exporters: dict, precisions) -> dict:
    """The exporters among ``exporters`` whose files this export calibrates on images (format -> exporter)."""
    return {f: e for f, e in exporters.items() if e.calib_methods and CALIBRATED_PRECISION in precisions}


def check_unused_options(given: ExportRequest, req: ExportRequest, exporters: dict) -> None:
    """Refuse an option ``given`` (the request as the caller gave it, before the recipe's defaults) that this
    export ``req`` would ignore, with an EdgesegError naming the option and the fix, before any work: --calib,
    --calib-count or --calib-method when no file is calibrated on images, stress thresholds with the stress set
    off, and a --threshold or --stress-threshold of a precision this export makes no file of. Only what the
    caller gave is checked: the recipe's ``export:`` section (or edgeseg's defaults) may set all of them."""
    if not calibrated_exporters(exporters, req.precisions):
        if given.calib_dir is not None:
            check_folder(given.calib_dir)  # a file or a missing folder says so first
        unused = [(flag, f"{flag} {value}") for flag, value in (("--calib", given.calib_dir),
                                                                ("--calib-count", given.calib_count),
                                                                ("--calib-method", given.calib_method))
                  if value is not None]
        if unused:
            raise EdgesegError(f"{_and([shown for _, shown in unused])} would be unused: "
                               f"{_no_calibrated_file(exporters, req.precisions, drop=_and([f for f, _ in unused]))}")
    if given.stress_thresholds and req.stress == "off":
        shown = ",".join(f"{k}={v:g}" for k, v in given.stress_thresholds.items())
        raise EdgesegError(f"--stress-threshold {shown}: stress parity is off (--stress off, or the recipe's "
                           "export.stress), so no threshold applies; drop --stress-threshold, or use --stress gate or report")
    for option, thresholds in (("--threshold", given.thresholds), ("--stress-threshold", given.stress_thresholds)):
        absent = {k: v for k, v in thresholds.items() if k not in req.precisions}
        if absent:
            shown = ",".join(f"{k}={v:g}" for k, v in absent.items())
            names = _and(list(absent))
            files = "file" if len(absent) == 1 else "files"
            raise EdgesegError(f"{option} {shown}: this export makes no {_and(list(absent), 'or')} {files} "
                               f"(--precisions {','.join(req.precisions)}); add {names} to --precisions, "
                               f"or drop {option} {shown}")


def _and(items: list[str], word: str = "and") -> str:
    """'a', 'a and b', 'a, b and c' (``word``: 'or' for 'a or b')."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


_EXTRA_MODULES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "tflite": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "mediapipe"),
                  "coreml": ("coremltools",), "executorch": ("executorch", "torchao")}


def _check_extra(exporter) -> None:
    for module in _EXTRA_MODULES[exporter.extra]:
        require(module, exporter.extra, f"{exporter.format} export")


def run_export(req: ExportRequest, on_artifact=None, *, model_source: ExportSource | None = None) -> ExportResult:
    """Export, check parity of every file, write the manifest; returns what was written.

    ``model_source`` is the model to export (default: ``req.checkpoint``, read after the cheap
    option checks). Options ``req`` leaves unset come from the model's recipe ``export:`` section, else
    the defaults (``ExportRequest.resolved``); every option is checked before any file is written.
    ``on_artifact(artifact)`` is called after each file is checked (for progress output).
    """
    dest = check_output(req.out_dir, is_dir=True, what="--out")
    if req.stress is not None and req.stress not in STRESS_MODES:
        raise EdgesegError(f"--stress must be one of {', '.join(STRESS_MODES)}, got {req.stress!r}")
    if model_source is None:
        model_source = checkpoint_source(resolve_checkpoint(req.checkpoint))
    given, req = req, req.resolved(model_source.export)
    exporters = load_exporters(req.formats, req.precisions)
    check_unused_options(given, req, exporters)
    methods = calib_methods_for(req.calib_method, exporters, req.precisions)
    info, task, model = model_source.info, model_source.task, model_source.model
    names = {MANIFEST_NAME, REFERENCE_NAME} | {f"{info.name}-{p}{SUFFIXES[f]}" for f in exporters for p in req.precisions}
    owned = owned_by_earlier_export(dest, names, req.force)
    # no file calibrated on images (no int8, or Core ML's weight-only int8): no images made or read, none recorded
    calib = calibration_images(req.calib_dir, model_source.recipe_root, task, req.calib_count, info.input_size,
                               model_source.augment, model_source.val_fraction) if methods else None
    source, described = parity_source(req.data_dir, task, req.parity_images, info.input_size, info.classes,
                                      model_source.val_fraction)
    with converter_output(req.verbose):
        for exporter in exporters.values():  # after the cheap input checks: these imports are slow and chatty
            _check_extra(exporter)
    gate = ParityGate.build(TorchRunner(model, input_size=info.input_size, mean=info.mean, std=info.std), req,
                            reference_set_args=(source, info.input_size, req.parity_images, info.classes, described))
    staging = staging_dir(dest)
    try:
        manifest = Manifest(model=model_source.model_section(), tools=tool_versions())
        if calib is not None:  # model.calibration exists only when some file was calibrated on its images
            manifest.model["calibration"] = {**calib.manifest_entry(), "methods": methods}
        meta = embedded_metadata(info, __version__)
        images = [] if calib is None else calib.images
        for fmt, exporter in exporters.items():
            for precision in req.precisions:
                job = ExportJob(model, info, precision, images, staging, f"{info.name}-{precision}",
                                metadata=meta, calib_method=methods.get(fmt, ExportCfg.calib_method))
                with converter_output(req.verbose):
                    art = exporter.export(job)
                    art.parity = gate.check(art, manifest)
                manifest.artifacts.append(art)
                if on_artifact:
                    on_artifact(art)
        manifest.parity_reference = gate.store(staging)
        manifest.write(staging)
        install_staged(staging, dest, owned=owned, last=MANIFEST_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for a in manifest.artifacts:
        a.root = dest
    manifest.root = dest
    return ExportResult(manifest, dest)


def converter_output(verbose: bool):
    """Fold what the converters and runtimes print (conversion stages, calibration progress bars, C++ logs) away
    from the caller, the Python API's as the CLI's; replayed on stderr when the block fails unexpectedly, shown
    as it comes with ``verbose``. edgeseg's one-line errors, a failed gate and Ctrl-C pass through as they are.

    Only in the main thread: folding swaps the process's stdout/stderr (and file descriptors 1 and 2), which an
    export in a worker thread (a web app's) must not do under the other threads' feet, nor two at once."""
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return folded_output(verbose, keep=(EdgesegError, KeyboardInterrupt))


@dataclass
class ParityGate:
    """The parity and stress references (PyTorch fp32 on the same pixels) and the thresholds per precision."""

    ref: object  # ReferenceSet
    stress: object | None  # ReferenceSet of the stress images, or None when not checked
    thresholds: dict
    stress_thresholds: dict
    max_gt_drop: float
    gate_stress: bool = False  # False: stress agreement is measured and recorded, but does not fail the file

    @classmethod
    def build(cls, reference, req: ExportRequest, *, reference_set_args) -> "ParityGate":
        ref = reference_set(reference, *reference_set_args)
        return cls(ref, None if req.stress == "off" else stress_set(reference, ref), req.thresholds,
                   req.stress_thresholds, req.max_gt_drop, req.stress == "gate")

    def check(self, art: Artifact, manifest: Manifest) -> dict:
        """The manifest ``parity`` block of one file: ``skipped`` when its runtime is not installed, failed
        (``cannot_run``, with the reason) when the runtime cannot load or run it: a tool gap is a finding."""
        threshold = self.thresholds[art.precision]
        try:
            runner = runner_for_artifact(art, manifest)
        except MissingExtra as exc:
            return skipped(str(exc), threshold)
        except ArtifactError as exc:
            return cannot_run(str(exc), art.format, threshold)
        with runner:
            try:
                result = check_parity(runner, self.ref, threshold=threshold, max_gt_drop=self.max_gt_drop,
                                      stress=self.stress, stress_threshold=self.stress_thresholds[art.precision],
                                      gate_stress=self.gate_stress)
            except ArtifactError as exc:
                return cannot_run(str(exc), runner.runtime, threshold)
        if runner.runtime == "coreml-reference":
            result["note"] = "evaluated by edgeseg's numpy reference interpreter of the ML Program, not Apple's Core ML runtime"
        return result

    def store(self, directory: Path) -> dict:
        """Write the reference into ``directory`` (``store_reference``); the manifest's ``parity_reference``
        entry, with the thresholds every file is held to (what ``edgeseg bench`` gates on)."""
        return {**store_reference(self.ref, self.stress, directory), "thresholds": self.thresholds,
                "stress_thresholds": self.stress_thresholds, "max_gt_drop_points": self.max_gt_drop,
                "stress_gated": self.gate_stress}


def _earlier_export_entries(dest: Path) -> dict[str, object]:
    """name -> recorded sha256 of what an earlier edgeseg export wrote in ``dest`` (the files and the parity
    reference its manifest lists; the manifest itself maps to None); empty if none.

    Read without trusting it: only plain names inside ``dest`` count, and a ``manifest.json``
    that is not edgeseg's (e.g. a web app's) makes the folder a foreign one.
    """
    try:
        raw = json.loads((dest / MANIFEST_NAME).read_text())
        entries = [(a["path"], a.get("sha256")) for a in raw["artifacts"]] if "schema_version" in raw and "model" in raw else None
        if entries is not None and isinstance(raw.get("parity_reference"), dict):
            entries.append((raw["parity_reference"].get("path"), raw["parity_reference"].get("sha256")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    if entries is None:
        return {}
    listed = {p: sha for p, sha in entries if isinstance(p, str) and p == Path(p).name and p not in ("", ".", "..")}
    return {MANIFEST_NAME: None, **listed}


def _unchanged(path: Path, sha256: object) -> bool:
    """Whether ``path`` still holds what the earlier manifest recorded (a missing entry counts as unchanged), or
    what an export killed while installing was putting there (``being_installed``)."""
    if not (path.exists() or path.is_symlink()):
        return True
    try:
        return not path.is_symlink() and (file_digest(path)[1] == sha256 or being_installed(path.parent, path.name))
    except OSError:
        return False


def owned_by_earlier_export(dest: Path, names: set[str], force: bool) -> set[str]:
    """Refuse (exit 2) to export into ``dest`` where that would replace something edgeseg did not write.

    A missing or empty folder, or one holding an earlier export, is fine: the earlier export's
    files are returned (they may be replaced or removed); other files there are kept. A file the
    earlier manifest lists but whose bytes changed since (sha256) is the user's now: kept when this
    export does not write its name, refused when it would be replaced. An existing entry named like a
    file this export writes (``names``) that no earlier export listed is always refused; a non-empty
    folder that is not an earlier export is refused unless ``force``.
    """
    if not dest.is_dir():
        return set()
    entries = _earlier_export_entries(dest)
    changed = sorted(n for n, sha in entries.items() if sha is not None and not _unchanged(dest / n, sha))
    clash = sorted(n for n in changed if n in names)
    if clash:
        raise EdgesegError(f"--out {dest}: {_some(clash)} changed since edgeseg exported it (its sha256 no longer "
                           "matches the manifest) and would be replaced; move or rename it, or choose another --out")
    owned = set(entries) - set(changed)
    # what an export killed while installing had put there (a file no manifest lists yet) is edgeseg's too
    owned |= {p.name for p in dest.iterdir() if p.name not in owned and not is_staging(p) and being_installed(dest, p.name)}
    foreign = sorted(p.name for p in dest.iterdir() if p.name not in owned and not is_staging(p))
    clash = sorted(n for n in foreign if n in names)
    if clash:
        them = "it" if len(clash) == 1 else "them"
        raise EdgesegError(f"--out {dest}: this export would replace {_some(clash)}, which edgeseg did not write; "
                           f"move or rename {them}, or choose another --out")
    if foreign and not entries and not force:
        raise EdgesegError(f"--out {dest}: files there are not from an earlier edgeseg export ({_some(foreign)}); "
                           "choose an empty or new folder, or pass --force to write the export beside them")
    return owned


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
