"""Model registry: architecture name -> builder (layer 2).

A builder is a keyword-only callable ``builder(*, num_classes, **options) -> nn.Module`` whose
module's ``forward`` takes a float32 NCHW *normalized* image and returns ONE logits tensor
``[N, C, H, W]`` at input resolution.
"""
from __future__ import annotations

import torch.nn as nn

from edgeseg.errors import EdgesegError, RecipeError
from edgeseg.models.spec import IMAGENET_MEAN, IMAGENET_STD, ArchSpec  # noqa: F401  (re-exported)

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


_builtin_done = False


def _ensure_builtin() -> None:
    """Register the zoo's built-in architectures, once, on the first lookup."""
    global _builtin_done
    if _builtin_done:
        return
    from edgeseg.models.zoo import builtin_specs

    _builtin_done = True
    for spec in builtin_specs():
        register(spec)
