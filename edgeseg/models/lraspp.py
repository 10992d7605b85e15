"""torchvision LR-ASPP MobileNetV3, returning a logits tensor instead of a dict.

The module tree (and so the state_dict keys) is exactly torchvision's, so its published
COCO-VOC checkpoints load unchanged.
"""
from __future__ import annotations

import torch
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.segmentation.lraspp import LRASPP, _lraspp_mobilenetv3


class LRASPPLogits(LRASPP):
    """torchvision's LRASPP whose forward returns ``out`` logits [N, C, H, W]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)["out"]


_BACKBONES = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}


def build_lraspp(variant: str, *, num_classes: int, width: float = 1.0, inter_channels: int = 128) -> LRASPPLogits:
    """LR-ASPP over a dilated torchvision MobileNetV3 ``variant`` ('large' | 'small')."""
    backbone = _BACKBONES[variant](weights=None, dilated=True, width_mult=width)
    ref = _lraspp_mobilenetv3(backbone, num_classes)
    head = ref.classifier
    return LRASPPLogits(
        ref.backbone,
        low_channels=head.low_classifier.in_channels,
        high_channels=head.cbr[0].in_channels,
        num_classes=num_classes,
        inter_channels=inter_channels,
    )
