"""Load torchvision / timm / edgeseg weights from a local file into a registered model.

Tries the file's keys as-is and under the architecture's known prefix mappings (e.g. a
torchvision ImageNet ``features.*`` checkpoint -> ``backbone.*``), picks the mapping that
covers the most keys, and refuses partial or mis-shaped loads with a message naming keys.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from edgeseg.errors import CheckpointError
from edgeseg.models.checkpoint import load_state_dict_file, state_mismatch


def _remap(state: dict, src: str, dst: str) -> dict:
    return {dst + k[len(src):]: v for k, v in state.items() if k.startswith(src)}


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
    full = best == ("", "")
    needed = set(target) if full else {k for k in target if k.startswith(dst)}
    # backbone checkpoints carry classifier heads we do not use
    problem = state_mismatch(mapped, target, needed, extra_ok=not full)
    if problem:
        raise CheckpointError(f"{path}: weights do not fit this model ({problem}); "
                              "use weights saved for the recipe's model.arch and options")
    model.load_state_dict({k: mapped[k] for k in needed}, strict=full)
    return "full model" if full else f"{src or '<root>'}* -> {dst}*"
