"""edgeseg checkpoints: weights plus everything needed to rebuild and preprocess (layer 2).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``. ``ModelInfo`` is the part every consumer needs (export,
eval, predict); the recipe, metrics and training state ride along.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgeseg import __version__
from edgeseg.errors import CheckpointError
from edgeseg.fsutil import write_bytes_atomic
from edgeseg.models.registry import build_model

FORMAT = "edgeseg.checkpoint"
FORMAT_VERSION = 1
ASSETS = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "portrait_default.pt"


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
        """The model with these weights, float32, eval mode."""
        m = self.info.build()
        m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()})
        return m.eval()


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
    return write_bytes_atomic(path, buf.getvalue())


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load an edgeseg checkpoint with weights_only=True; CheckpointError if missing or not ours."""
    path = Path(path)
    raw = _read(path)
    payload = _torch_load(raw, path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeseg checkpoint (no '{FORMAT}' marker); "
                              "to start from torchvision/timm weights use model.weights / --weights")
    try:
        info = ModelInfo.from_dict(payload["info"])
        state = payload["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: edgeseg checkpoint is missing field {exc}") from None
    return Checkpoint(info=info, state_dict=state, recipe=payload.get("recipe", {}), metrics=payload.get("metrics", {}),
                      train_state=payload.get("train_state"), versions=payload.get("versions", {}),
                      sha256=hashlib.sha256(raw).hexdigest(), path=path)


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path.read_bytes()


def _torch_load(raw: bytes, path: Path) -> Any:
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/unsafe files
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [exc.__class__.__name__]
        why = next((ln for ln in lines if "Unsupported global" in ln or "error" in ln.lower()), lines[0])
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch file ({why[:200]})") from None


def load_state_dict_file(path: str | Path) -> dict:
    """Read a plain state_dict (torchvision/timm/edgeseg) with weights_only=True."""
    path = Path(path)
    payload = _torch_load(_read(path), path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        payload = payload["state_dict"]
    for key in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return payload


def resolve_checkpoint(spec: str | Path | None) -> Checkpoint:
    """``None`` or 'default' -> the packaged default portrait model; else a checkpoint path."""
    if spec is None or str(spec) == "default":
        if not DEFAULT_CHECKPOINT.is_file():
            raise CheckpointError(f"the packaged default model is missing ({DEFAULT_CHECKPOINT}); reinstall edgeseg")
        return load_checkpoint(DEFAULT_CHECKPOINT)
    return load_checkpoint(spec)
