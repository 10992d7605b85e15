"""Model registry: architecture name -> builder (layer 2).

A builder is a keyword-only callable ``builder(*, num_classes, **options) -> nn.Module`` whose
module's ``forward`` takes a float32 NCHW *normalized* image and returns ONE logits tensor
``[N, C, H, W]`` at input resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from edgeseg.errors import EdgesegError, RecipeError

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ArchSpec:
    """What the registry knows about one architecture."""

    name: str
    builder: Callable[..., nn.Module]
    default_size: tuple[int, int]
    stride: int
    description: str
    options: dict = field(default_factory=dict)  # option name -> default value
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # (file prefix, model prefix) pairs for loading backbone-only checkpoints
    weight_prefixes: tuple[tuple[str, str], ...] = ()


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    """Add an architecture; registering the same name twice raises ValueError."""
    if spec.name in _REGISTRY:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ArchSpec:
    """Return the spec for ``name`` or raise RecipeError listing the known names."""
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    """All registered architecture names, sorted."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def check_input_size(spec: ArchSpec, height: int, width: int) -> None:
    """Raise EdgesegError naming a valid size when (height, width) does not fit the stride."""
    s = spec.stride
    if height % s or width % s or height < s or width < s:
        ok = (max(s, round(height / s) * s), max(s, round(width / s) * s))
        raise EdgesegError(
            f"input size {height}x{width} does not fit {spec.name} (output stride {s}); "
            f"use a multiple of {s}, e.g. {ok[0]}x{ok[1]}"
        )


def build_model(name: str, *, num_classes: int, input_size: tuple[int, int] | None = None, **options) -> nn.Module:
    """Build architecture ``name`` with ``num_classes`` outputs; unknown options are errors."""
    spec = get_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise RecipeError(f"model option {unknown[0]!r} is not known to {name}; known: {', '.join(sorted(spec.options)) or 'none'}")
    if num_classes < 2:
        raise RecipeError(f"model.num_classes must be >= 2, got {num_classes}")
    if input_size is not None:
        check_input_size(spec, *input_size)
    return spec.builder(num_classes=num_classes, **{**spec.options, **options})


def _ensure_builtin() -> None:
    # Importing the zoo registers the built-in architectures exactly once.
    from edgeseg.models import zoo  # noqa: F401
