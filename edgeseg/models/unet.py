"""A light U-Net-style segmenter over a timm ``features_only`` MobileNet encoder.

encoder -> decoder (upsample x2, concat skip, depthwise-separable conv) -> 1x1 head ->
bilinear upsample to input size. The decoder has one up-block per ``decoder_channels`` entry,
starting from the coarsest feature; with one entry per skip (4 for a stride-32 timm encoder)
the head runs at stride 2, with one fewer at stride 4, and so on, so a shorter decoder does
less work at high resolution. Only export-friendly ops: fixed-size bilinear resizes with
align_corners=False, concat, convs, BN, ReLU.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.errors import RecipeError


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def check_decoder_length(decoder_channels: Sequence[int], skips: int) -> None:
    """Raise RecipeError unless there is one decoder stage per skip used: 1 to ``skips`` entries."""
    n = len(decoder_channels)
    if not 1 <= n <= skips:
        raise RecipeError(
            f"model.decoder_channels has {n} entries; valid lengths are 1 to {skips} (one up-block per encoder "
            f"skip from the coarsest: {skips} puts the head at the finest skip, each entry fewer doubles its stride)"
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1 conv, each followed by BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate it, fuse with a separable conv."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.fuse = SeparableConvBNReLU(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([_upsample(x, skip.shape[-2:]), skip], dim=1))


class UNetDecoder(nn.Module):
    """Decoder over encoder features ordered from finest (stride 2) to coarsest.

    ``decoder_channels[i]`` is the output width of the i-th up-block from the coarsest feature;
    skips finer than the last block's are not used.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]):
        super().__init__()
        deep = list(encoder_channels)[::-1]  # coarsest first
        check_decoder_length(decoder_channels, len(deep) - 1)
        cin = deep[0]
        blocks = []
        for cskip, cout in zip(deep[1:], decoder_channels):
            blocks.append(UpBlock(cin, cskip, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = list(feats)[::-1]
        x = feats[0]
        for block, skip in zip(self.blocks, feats[1:]):  # stops after the last block
            x = block(x, skip)
        return x


class UNetSegmenter(nn.Module):
    """encoder -> UNetDecoder -> 1x1 head; ``forward`` returns logits [N, C, H, W]."""

    def __init__(self, encoder: nn.Module, encoder_channels: Sequence[int], decoder_channels: Sequence[int], num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder_channels, decoder_channels)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.decoder(self.encoder(x)))
        return _upsample(logits, x.shape[-2:])
