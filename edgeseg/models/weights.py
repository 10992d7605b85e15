"""Load torchvision / timm / edgeseg weights from a local file into a registered model.

Tries the file's keys as-is and under the architecture's known prefix mappings (e.g. a
torchvision ImageNet ``features.*`` checkpoint -> ``backbone.*``), picks the mapping that
covers the most keys, and refuses partial or mis-shaped loads with a message naming keys.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from edgeseg.errors import CheckpointError
from edgeseg.models.checkpoint import load_state_dict_file


def _remap(state: dict, src: str, dst: str) -> dict:
    return {dst + k[len(src):]: v for k, v in state.items() if k.startswith(src)}


def _few(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")


def load_weights(model: nn.Module, path: str | Path, prefixes: tuple[tuple[str, str], ...] = ()) -> str:
    """Load weights from ``path`` into ``model`` in place; return which mapping was used.

    ``prefixes`` are (file prefix, model prefix) pairs for partial (backbone/encoder) loads:
    every model key under the model prefix must then be present with the same shape.
    """
    state = load_state_dict_file(path)
    target = model.state_dict()
    candidates = [("", "")] + list(prefixes)
    best = max(candidates, key=lambda c: len(set(_remap(state, *c)) & set(target)))
    src, dst = best
    mapped = _remap(state, src, dst)
    needed = {k for k in target if k.startswith(dst)}
    if best == ("", ""):
        needed = set(target)
    missing = needed - set(mapped)
    unexpected = set(mapped) - set(target)
    if best != ("", ""):
        unexpected = set()  # backbone checkpoints carry classifier heads we do not use
    shape_bad = [k for k in needed & set(mapped) if tuple(mapped[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if shape_bad:
            k = sorted(shape_bad)[0]
            parts.append(f"shape mismatch for {len(shape_bad)} keys, e.g. {k}: file {tuple(mapped[k].shape)} "
                         f"vs model {tuple(target[k].shape)}")
        raise CheckpointError(f"{path}: weights do not fit this model ({'; '.join(parts)})")
    model.load_state_dict({k: mapped[k] for k in needed}, strict=(best == ("", "")))
    return "full model" if best == ("", "") else f"{src or '<root>'}* -> {dst}*"
