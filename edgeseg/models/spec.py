"""What the registry knows about one architecture (layer 2); the zoo lists the built-in ones."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

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
    # options -> the name of the encoder's ImageNet weights that model.weights 'imagenet' stands for
    # ('timm:<model>' or 'torchvision:<Enum>.<member>', see models/weights.py); None: the architecture has none
    imagenet_weights: Callable[[dict], str] | None = None
