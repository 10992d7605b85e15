"""What an export starts from: a PyTorch model and the facts the pipeline needs about it (layer 4).

An ``ExportSource`` is an fp32 ``nn.Module`` that maps normalized [N, 3, H, W] input to
[N, C, H, W] logits at input resolution, its ``ModelInfo`` (name, classes, input size, mean/std),
and where its weights came from (recorded in the manifest's ``model`` section).
``checkpoint_source`` makes one from an edgeseg checkpoint; ``module_source`` from any module a
user built, checked (arguments, then one dry run) before any heavy work.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgeseg.errors import EdgesegError, RecipeError
from edgeseg.manifest import is_model_name, shown
from edgeseg.models.checkpoint import INFO_RULES, Checkpoint, ModelInfo
from edgeseg.models.profile import count_macs, count_params
from edgeseg.recipe import AugmentCfg, DataCfg, ExportCfg, augment_from_dict, export_from_dict
from edgeseg.runtime.loader import synth_task_for
from edgeseg.runtime.stabilizer import SmoothCfg


@dataclass(frozen=True)
class ExportSource:
    """The model to export and what the pipeline needs besides it."""

    model: nn.Module  # fp32, eval mode: normalized [N, 3, H, W] -> logits [N, C, H, W]
    info: ModelInfo
    task: str | None  # the built-in synthetic set matching its classes (None: none does; parity is agreement-only)
    origin: dict  # where the weights came from, for the manifest: {"checkpoint": {...}} or {"module": {...}}
    recipe_root: str | None = None  # the training data, calibrated on when no --calib is given
    augment: AugmentCfg | None = None  # the training augmentations calibration images follow
    export: ExportCfg = ExportCfg()  # export defaults: the recipe's ``export:`` section, else edgeseg's
    val_fraction: float = DataCfg.val_fraction  # a split-less dataset folder's 'val' share (the training run's)

    def model_section(self) -> dict:
        """The manifest's ``model`` section: identity, classes, preprocessing, size, origin, and the video
        stabilizer's parameters (what ``--smooth`` runs after this model: to port beside the files)."""
        info = self.info
        h, w = info.input_size
        return {"name": info.name, "architecture": info.arch, "options": info.to_dict()["options"],
                "classes": list(info.classes), "task": self.task, "input": {"height": h, "width": w},
                "mean": list(info.mean), "std": list(info.std), "params": count_params(self.model),
                "macs": count_macs(self.model, h, w), "stabilizer": SmoothCfg().to_dict(),
                "val_fraction": self.val_fraction, **self.origin}


def training_augment(ckpt: Checkpoint) -> AugmentCfg | None:
    """The training augmentations of the checkpoint's recipe; None when it carries no recipe (nothing to follow)."""
    values = ckpt.recipe.get("data", {}).get("augment")
    if values is None:
        return None
    try:
        return augment_from_dict(values)
    except RecipeError as exc:
        raise RecipeError(f"{ckpt.path}: its training {exc}") from None


def recipe_export(ckpt: Checkpoint) -> ExportCfg:
    """The export defaults of the checkpoint's recipe (its ``export:`` section over edgeseg's defaults)."""
    try:
        return export_from_dict(ckpt.recipe.get("export"))
    except RecipeError as exc:
        raise RecipeError(f"{ckpt.path}: its training {exc}") from None


def checkpoint_source(ckpt: Checkpoint, model: nn.Module | None = None) -> ExportSource:
    """The export source of an edgeseg checkpoint; ``model``: its weights already loaded (else loaded here).

    The manifest records the checkpoint's absolute path (as training records ``data.root``), and a relative path
    as typed too (``given``): ``edgeseg bench`` and ``inspect`` look for it at either (``Manifest.checkpoint_paths``),
    trusting only the sha256 recorded with them."""
    record = {"path": None if ckpt.path is None else os.path.abspath(ckpt.path), "sha256": ckpt.sha256}
    if ckpt.path is not None and not os.path.isabs(ckpt.path):
        record["given"] = str(ckpt.path)  # also looked for as typed: a checkout moved, or a CI runner's other path
    return ExportSource(ckpt.model() if model is None else model, ckpt.info, synth_task_for(ckpt.info.classes),
                        {"checkpoint": record},
                        ckpt.recipe.get("data", {}).get("root"), training_augment(ckpt), recipe_export(ckpt),
                        ckpt.val_fraction)


def module_source(module: nn.Module, *, classes, input_size, mean, std, name: str | None = None) -> ExportSource:
    """The export source of any module: a float32 CPU copy in eval mode (the caller's module is not changed).

    EdgesegError, one line naming the argument, when: ``module`` is not an ``nn.Module``; ``classes``,
    ``input_size`` ((height, width), or one int for a square), ``mean`` / ``std`` (three numbers in
    0-255 pixel units; ImageNet's in 0-1 units are refused, as they would ship unnoticed) or ``name`` are not
    usable; or a dry run on one zero image fails or returns
    anything but one [1, len(classes), H, W] tensor.
    """
    if not isinstance(module, nn.Module):
        raise EdgesegError(f"module of type {type(module).__name__} is not a torch.nn.Module; give a module that maps "
                           "normalized [N, 3, H, W] images to [N, C, H, W] logits")
    kind = type(module).__name__
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    given = {"classes": _as_tuple(classes), "input_size": _as_tuple(input_size), "mean": _as_tuple(mean),
             "std": _as_tuple(std)}
    for key, value in given.items():
        check, valid = INFO_RULES[key]
        if not check(value):
            raise EdgesegError(f"{key}={shown(value)}: it must be {valid}")
    if all(abs(float(v)) <= 1 for v in given["mean"]) and all(float(v) < 1 for v in given["std"]):
        raise EdgesegError(f"mean={shown(given['mean'])}, std={shown(given['std'])} look like 0-1 units; edgeseg takes "
                           "them in 0-255 pixel units (ImageNet's: mean=(123.675, 116.28, 103.53), "
                           "std=(58.395, 57.12, 57.375))")
    name = name if name is not None else (kind if is_model_name(kind) else "model")
    if not is_model_name(name):
        raise EdgesegError(f"name={shown(name)}: it must be {INFO_RULES['name'][1]}")
    info = ModelInfo(name=name, arch=f"custom ({kind})", options={}, classes=given["classes"],
                     input_size=given["input_size"], mean=tuple(map(float, given["mean"])),
                     std=tuple(map(float, given["std"])))
    model = copy.deepcopy(module).float().cpu().eval()
    _dry_run(model, kind, info)
    origin = {"module": {"class": f"{type(module).__module__}.{type(module).__qualname__}",
                         "sha256": weights_sha256(model)}}
    return ExportSource(model, info, synth_task_for(info.classes), origin)


def _as_tuple(value):
    """A list, tuple or array (numpy, torch) as a tuple of Python values; anything else as it is (the rules name it)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return value
    return tuple(value.tolist() if hasattr(value, "tolist") else value)


def _dry_run(model: nn.Module, kind: str, info: ModelInfo) -> None:
    """EdgesegError unless ``model`` maps one zero image to logits [1, len(classes), H, W]."""
    h, w = info.input_size
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, h, w))
    except Exception as exc:  # the user's forward: any error means it cannot take this input
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise EdgesegError(f"module {kind} failed on a [1, 3, {h}, {w}] input ({type(exc).__name__}: {first}); it must "
                           "take normalized [N, 3, H, W] images at input_size") from None
    if not isinstance(out, torch.Tensor):
        raise EdgesegError(f"module {kind} returned a {type(out).__name__}; it must return one logits tensor "
                           "[N, C, H, W] (wrap a model that returns a dict or tuple to return the logits)")
    expected = [1, info.num_classes, h, w]
    if list(out.shape) != expected or not out.is_floating_point():
        what = f"{out.dtype} {list(out.shape)}"
        why = (f"{out.shape[1]} output channels but {info.num_classes} classes; give one class name per channel"
               if out.ndim == 4 and list(out.shape[2:]) == [h, w] and out.shape[1] != info.num_classes
               else f"it must return float logits {expected} at the input resolution")
        raise EdgesegError(f"module {kind} returned {what} for a [1, 3, {h}, {w}] input: {why}")
    _check_traceable(model, kind, h, w)


def _check_traceable(model: nn.Module, kind: str, h: int, w: int) -> None:
    """EdgesegError unless ``torch.export`` can capture ``model`` (every exporter starts from that graph): found
    before any file is written, in one line, not as pages of FX graph from deep inside an exporter (torch prints
    the partial graph to stderr before it raises: kept out of the user's terminal)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            torch.export.export(model, (torch.zeros(1, 3, h, w),), strict=False)
    except Exception as exc:  # the user's forward, traced: any failure means no exporter can take it
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:200]
        raise EdgesegError(f"module {kind} cannot be exported: torch.export could not capture it ({first}); "
                           "write forward without Python branches on tensor values (use torch.where) and "
                           "without data-dependent shapes") from None


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a module's state_dict: which weights were exported."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
