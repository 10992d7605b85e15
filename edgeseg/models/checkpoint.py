"""edgeseg checkpoints: weights plus everything needed to rebuild and preprocess (layer 2).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``. ``ModelInfo`` is the part every consumer needs (export,
eval, predict); the recipe, metrics and training state ride along.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgeseg import __version__
from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.fsutil import write_bytes_atomic
from edgeseg.manifest import (MANIFEST_NAME, MODEL_NAME_RULE, SUFFIXES, channel_values, class_names, is_model_name,
                              positive_int, shown)
from edgeseg.models.registry import build_model
from edgeseg.recipe import val_fraction_or_default

FORMAT = "edgeseg.checkpoint"
FORMAT_VERSION = 1
ASSETS = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "portrait_default.pt"
#: The models edgeseg ships, by the name that opens them anywhere a checkpoint path is accepted
#: (the name wins over a file or folder of that name in the working directory: write ./parts for that).
PACKAGED = {"default": DEFAULT_CHECKPOINT, "parts": ASSETS / "parts.pt"}
PACKAGED_ABOUT = {"default": "portrait (background, person)", "parts": "try-on parts (background, hair, skin, body, clothes)"}


def is_packaged(spec) -> bool:
    """Whether ``spec`` (None included) names a packaged model rather than a path."""
    return spec is None or (isinstance(spec, str) and spec in PACKAGED)


@dataclass(frozen=True)
class ModelInfo:
    """Architecture, classes and preprocessing: what a consumer needs besides weights."""

    name: str
    arch: str
    options: dict
    classes: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]  # 0-255 pixel units: normalized = (pixel - mean) / std
    std: tuple[float, ...]

    def __post_init__(self):
        problem = info_problem({f.name: getattr(self, f.name) for f in fields(self)})
        if problem:
            raise EdgesegError(f"model info: {problem}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        return cls(
            name=str(d["name"]), arch=str(d["arch"]), options=dict(d.get("options", {})),
            classes=tuple(d["classes"]), input_size=tuple(int(v) for v in d["input_size"]),
            mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
        )

    def build(self) -> nn.Module:
        """A freshly initialised model of this architecture (no weights loaded)."""
        return build_model(self.arch, num_classes=self.num_classes, input_size=self.input_size, **self.options)


# Every field of ``ModelInfo`` and what a valid value is: the name becomes file names, the rest
# feeds preprocessing. Checked on every ModelInfo built and on every checkpoint loaded.
INFO_RULES = {
    "name": (is_model_name, MODEL_NAME_RULE),
    "arch": (lambda v: isinstance(v, str) and v.strip() != "", "an architecture name (see `edgeseg models`)"),
    "options": (lambda v: isinstance(v, dict), "a mapping of architecture options"),
    "classes": (class_names, "a non-empty list of distinct class names"),
    "input_size": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(positive_int(x) for x in v),
                   "[height, width], two integers >= 1"),
    "mean": (channel_values, "three finite numbers (0-255 pixel units)"),
    "std": (lambda v: channel_values(v, positive=True), "three finite numbers > 0 (0-255 pixel units)"),
}


def info_problem(info: Any) -> str:
    """What is wrong with a ModelInfo dict (``INFO_RULES``), naming the field; '' when nothing."""
    if not isinstance(info, dict):
        return f"'info' is {shown(info)}; it must be a mapping"
    for key, (check, valid) in INFO_RULES.items():
        if key not in info:
            if key == "options":
                continue  # optional: the architecture's defaults
            return f"'info.{key}' is missing"
        if not check(info[key]):
            return f"'info.{key}' is {shown(info[key])}; it must be {valid}"
    return ""


def payload_problem(payload: dict) -> tuple[str, str]:
    """(what is wrong, how to fix it) with an edgeseg checkpoint's structure; ('', '') when nothing.

    The structure every consumer reads: ``info`` (``INFO_RULES``), a tensor ``state_dict``, and the
    optional ``recipe`` (a mapping; its ``data`` a mapping with a text ``task`` and ``root``),
    ``metrics`` and ``versions`` (mappings).
    """
    rebuild = "the file was edited or is corrupt; re-save it from its training run"
    info = payload.get("info")
    problem = info_problem(info)
    if problem:
        if isinstance(info, dict) and "name" in info and not is_model_name(info["name"]):
            return problem, ("retrain with a recipe 'name' that is a plain file name, or re-save the checkpoint "
                             "with such an info.name")
        return problem, rebuild
    if "state_dict" not in payload:
        return "'state_dict' is missing", rebuild
    if not _is_state_dict(payload["state_dict"]):
        return "'state_dict' is not a mapping of names to tensors", rebuild
    for key in ("recipe", "metrics", "versions"):
        if not isinstance(payload.get(key, {}), dict):
            return f"'{key}' is {shown(payload[key])}; it must be a mapping", rebuild
    if not isinstance(payload.get("train_state"), (dict, type(None))):
        return f"'train_state' is {shown(payload['train_state'])}; it must be a mapping", rebuild
    data = payload.get("recipe", {}).get("data", {})
    if not isinstance(data, dict):
        return f"'recipe.data' is {shown(data)}; it must be a mapping", rebuild
    for key in ("task", "root"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            return f"'recipe.data.{key}' is {shown(value)}; it must be a non-empty string or unset", rebuild
    return "", ""


@dataclass
class Checkpoint:
    info: ModelInfo
    state_dict: dict
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    train_state: dict | None = None  # optimizer/scheduler/step/epoch/rng, last.pt only
    versions: dict = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None

    def model(self) -> nn.Module:
        """The model with these weights, float32, eval mode; CheckpointError if they do not fit its info."""
        info = self.info
        try:
            m = info.build()
        except (EdgesegError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: declares a model that cannot be built ({exc})") from None
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        return load_fitting(m, state, f"{self.path}: weights do not fit the {info.arch} with {info.num_classes} "
                                      "classes it declares", "the file was edited or is corrupt; "
                                      "re-save it from its training run").eval()

    @property
    def val_fraction(self) -> float:
        """The share of a split-less dataset folder its training run held out for validation (the recipe's
        ``data.val_fraction``; edgeseg's default when the checkpoint carries none), so eval and export --data
        read the same 'val' split."""
        data = self.recipe.get("data") if isinstance(self.recipe, dict) else None
        return val_fraction_or_default(data.get("val_fraction") if isinstance(data, dict) else None)


def _few(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")


def state_mismatch(state: dict, target: dict, needed: set | None = None, *, extra_ok: bool = False) -> str:
    """How ``state`` fails to fit ``target`` (a model's state_dict), naming a few keys; '' when it fits.

    ``needed``: the target keys that must be present (default all); ``extra_ok``: ignore keys the
    target does not have (a backbone checkpoint's classifier).
    """
    needed = set(target) if needed is None else needed
    missing = needed - set(state)
    unexpected = set() if extra_ok else set(state) - set(target)
    shape_bad = sorted(k for k in needed & set(state) if tuple(state[k].shape) != tuple(target[k].shape))
    parts = []
    if missing:
        parts.append(f"missing keys: {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_few(unexpected)}")
    if shape_bad:
        k = shape_bad[0]
        parts.append(f"shape mismatch for {len(shape_bad)} keys, e.g. {k}: file {tuple(state[k].shape)} "
                     f"vs model {tuple(target[k].shape)}")
    return "; ".join(parts)


def upgrade_state(model: nn.Module, state: dict) -> dict:
    """``state`` with the keys of earlier layouts rewritten by the modules of ``model`` that changed
    theirs (a module's ``upgrade_state_keys(state, prefix)``, e.g. the U-Net up-block); a new dict."""
    state = dict(state)
    for name, module in model.named_modules():
        upgrade = getattr(module, "upgrade_state_keys", None)
        if callable(upgrade):
            upgrade(state, f"{name}." if name else "")
    return state


def load_fitting(model: nn.Module, state: dict, what: str, fix: str) -> nn.Module:
    """Load ``state`` (earlier layouts upgraded) into ``model`` strictly, or raise CheckpointError
    "``what`` (mismatch); ``fix``"."""
    state = upgrade_state(model, state)
    problem = state_mismatch(state, model.state_dict())
    if problem:
        raise CheckpointError(f"{what} ({problem}); {fix}")
    model.load_state_dict(state)
    return model


def versions() -> dict:
    """Versions of the libraries that shape a checkpoint."""
    import torchvision

    out = {"edgeseg": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}
    try:
        import timm

        out["timm"] = str(timm.__version__)
    except ImportError:
        pass
    return out


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo, *, recipe: dict | None = None,
                    metrics: dict | None = None, train_state: dict | None = None, half: bool = False) -> Path:
    """Write a checkpoint atomically; ``half`` stores floating weights as float16 (for shipping)."""
    return write_bytes_atomic(path, checkpoint_bytes(model, info, recipe=recipe, metrics=metrics,
                                                     train_state=train_state, half=half))


def checkpoint_bytes(model: nn.Module, info: ModelInfo, *, recipe: dict | None = None, metrics: dict | None = None,
                     train_state: dict | None = None, half: bool = False) -> bytes:
    """The bytes of the checkpoint ``save_checkpoint`` writes (for a caller that places the file itself)."""
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in _unwrap(model).state_dict().items()}
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "info": info.to_dict(), "state_dict": state,
        "recipe": recipe or {}, "metrics": metrics or {}, "versions": versions(),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load an edgeseg checkpoint with weights_only=True; CheckpointError if missing, not ours, or malformed
    (``payload_problem``: a name that is not a plain file name, unusable preprocessing, a recipe that is
    not a mapping), naming the file and the field."""
    path = Path(path)
    raw = _read(path)
    payload = _torch_load(raw, path)
    _check_format(payload, path)
    problem, fix = payload_problem(payload)
    if problem:
        raise CheckpointError(f"{path}: edgeseg checkpoint field {problem}; {fix}")
    info = ModelInfo.from_dict(payload["info"])
    state = payload["state_dict"]
    return Checkpoint(info=info, state_dict=state, recipe=payload.get("recipe", {}), metrics=payload.get("metrics", {}),
                      train_state=payload.get("train_state"), versions=payload.get("versions", {}),
                      sha256=hashlib.sha256(raw).hexdigest(), path=path)


def _check_format(payload: Any, path: Path) -> None:
    """CheckpointError unless ``payload`` carries edgeseg's marker and a format version we read."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeseg checkpoint (no '{FORMAT}' marker); "
                              "to start from torchvision/timm weights use model.weights / --weights")
    version = payload.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this edgeseg "
                              f"({__version__}) reads (version {FORMAT_VERSION}); upgrade edgeseg to load it")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not one edgeseg knows "
                              f"(it reads version {FORMAT_VERSION}); re-save it from its training run")


def _is_state_dict(payload: Any) -> bool:
    return isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values())


def _read(path: Path) -> bytes:
    """The file's bytes; CheckpointError for a folder, a missing file or an empty one."""
    if path.is_dir():
        export_dir = (path / MANIFEST_NAME).is_file()
        raise CheckpointError(
            f"{path} is a folder (an export dir), not a checkpoint file; pass the .pt file it was exported from"
            if export_dir else
            f"{path} is a folder, not a checkpoint file, and has no {MANIFEST_NAME} so it is not an export dir "
            "either; pass a .pt checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    exported = next((fmt for fmt, suffix in SUFFIXES.items() if path.suffix.lower() == suffix), None)
    if exported or path.name == MANIFEST_NAME:
        what = f"an exported {exported} file" if exported else "an export's manifest"
        raise CheckpointError(f"{path} is {what}, not a checkpoint; this starts from a PyTorch .pt checkpoint: the "
                              "one it was exported from (its manifest's model.checkpoint.path), or 'default'")
    if path.suffix.lower() != ".pt" and (path.parent / MANIFEST_NAME).is_file():
        raise CheckpointError(f"{path} is a file of the export in {path.parent}, not a checkpoint or model file; pass a "
                              f".pt checkpoint (to export it), or the folder {path.parent} (to run the export)")
    raw = path.read_bytes()
    if not raw:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint; re-save or re-download it")
    return raw


ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since PyTorch 1.6; older files are bare pickles
# torch.load's advice lines around the reason it refused a file (not the reason itself)
_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation")


def _torch_load(raw: bytes, path: Path) -> Any:
    """``torch.load(weights_only=True)``; CheckpointError with torch's one-line reason on failure."""
    try:
        with warnings.catch_warnings():  # the unpickler's protocol notice is advice to PyTorch users, not ours
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/unsafe files
        raise CheckpointError(f"{path}: {_load_failure(exc, is_archive=raw.startswith(ZIP_MAGIC))}") from None


def _load_failure(exc: Exception, *, is_archive: bool) -> str:
    """Why torch.load refused a file, in one line: a reference to code keeps its full reason."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    unsafe = next((ln for ln in lines if "unsupported global" in ln.lower()), None)
    if unsafe:
        return (f"refused by weights-only loading: it references Python code, which weights never need ({unsafe[:200]}); "
                "re-save only the weights with torch.save(model.state_dict(), path)")
    reason = next((ln for ln in lines if not ln.lower().startswith(_BOILERPLATE)), "")
    reason = reason.split("WeightsUnpickler error:")[-1].split(". ")[0].strip()[:160]
    if is_archive:
        return f"cannot be read: the PyTorch archive is truncated or corrupt ({reason}); re-save or re-download it"
    if not isinstance(exc, pickle.UnpicklingError) or not reason:
        reason = f"{exc.__class__.__name__}: {reason}" if reason else exc.__class__.__name__
    return f"not a PyTorch checkpoint (could not unpickle: {reason}); check the path or re-save the file"


def load_state_dict_file(path: str | Path) -> dict:
    """Read a plain state_dict (torchvision/timm/edgeseg) with weights_only=True."""
    path = Path(path)
    payload = _torch_load(_read(path), path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        payload = payload["state_dict"]
    for key in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not _is_state_dict(payload):
        raise CheckpointError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return payload


def resolve_checkpoint(spec: str | Path | None) -> Checkpoint:
    """``None`` or 'default' -> the packaged default portrait model, 'parts' -> the packaged parts model
    (``PACKAGED``); else a checkpoint path."""
    return load_checkpoint(packaged_path(spec) if is_packaged(spec) else spec)


def packaged_path(spec: str | None) -> Path:
    """The file of the packaged model ``spec`` names (``is_packaged``: None or 'default', 'parts');
    CheckpointError when the installation lacks it."""
    path = PACKAGED[spec or "default"]
    if not path.is_file():
        raise CheckpointError(f"the packaged {spec or 'default'} model is missing ({path}); reinstall edgeseg")
    return path
