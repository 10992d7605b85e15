"""Losses for thin structures and crisp edges: cross-entropy (optionally weighted up near the ground
truth's class boundaries) plus soft Dice (layer 3)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.metrics import IGNORE_INDEX, band_width


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient; ignore pixels excluded."""
    num_classes = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1).float()
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=num_classes - 1) * (target != IGNORE_INDEX), num_classes).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def boundary_band(target: torch.Tensor, num_classes: int, radius: int) -> torch.Tensor:
    """[N,H,W] bool: pixels with another (non-ignore) class within ``radius`` px (chessboard distance),
    the band that Boundary IoU scores (``metrics.band_width``). Box counts from summed-area tables."""
    valid = target != IGNORE_INDEX
    onehot = F.one_hot(target.clamp(max=num_classes - 1) * valid, num_classes).permute(0, 3, 1, 2).to(torch.int32)
    onehot = onehot * valid.unsqueeze(1)
    k = 2 * radius + 1
    table = F.pad(onehot, (radius + 1, radius, radius + 1, radius)).cumsum(2).cumsum(3)
    box = table[..., k:, k:] - table[..., :-k, k:] - table[..., k:, :-k] + table[..., :-k, :-k]
    return ((box > 0).sum(1) > 1) & valid


class SegLoss(nn.Module):
    """``CE + dice_weight * Dice``. CE for per-pixel accuracy, Dice so thin classes/strands count; with
    ``boundary_weight`` w > 0 each pixel in the Boundary IoU band of the ground truth weighs 1 + w in
    the CE (a weighted mean), so the edges a cutout shows get more of the gradient."""

    def __init__(self, dice_weight: float = 1.0, boundary_weight: float = 0.0):
        super().__init__()
        self.dice_weight = dice_weight
        self.boundary_weight = boundary_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.boundary_weight:
            ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
            band = boundary_band(target, logits.shape[1], band_width(*target.shape[-2:]))
            weight = (target != IGNORE_INDEX).float() + self.boundary_weight * band.float()
            loss = (ce * weight).sum() / weight.sum().clamp(min=1.0)
        else:
            loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        return loss
