"""A light U-Net-style segmenter over a timm ``features_only`` MobileNet encoder.

encoder -> decoder (upsample x2, fuse with the skip by a depthwise-separable conv) -> 1x1 head ->
bilinear upsample to input size. The decoder has one up-block per ``decoder_channels`` entry,
starting from the coarsest feature; with one entry per skip (4 for a stride-32 timm encoder)
the head runs at stride 2, with one fewer at stride 4, and so on, so a shorter decoder does
less work at high resolution. Only export-friendly ops: fixed-size bilinear resizes with
align_corners=False, convs, BN, add, ReLU (no concat: see ``UpBlock``).
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


class DepthwiseBNReLU(nn.Sequential):
    """Depthwise 3x3 conv + BN + ReLU."""

    def __init__(self, channels: int):
        super().__init__(nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class PointwiseBN(nn.Sequential):
    """1x1 conv + BN."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class UpBlock(nn.Module):
    """Upsample ``x`` to the skip's size and fuse the two with a depthwise-separable conv, without
    concatenating them: each input gets its own depthwise 3x3 + BN + ReLU and 1x1 + BN, the two
    1x1 outputs are added, then ReLU. A concat has one quantization scale for all its inputs, so
    int8 converters put a requantize in front of it; an add rescales its inputs itself, so the
    int8 graph is integer end to end with no rescale op. Checkpoints written when the block was
    ``fuse`` = separable conv over ``concat(x, skip)`` load unchanged (``upgrade_state_keys``, run
    by edgeseg's loaders and by ``load_state_dict``): in eval mode the two are the same function."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.cin = cin
        self.dw_up, self.dw_skip = DepthwiseBNReLU(cin), DepthwiseBNReLU(cskip)
        self.pw_up, self.pw_skip = PointwiseBN(cin, cout), PointwiseBN(cskip, cout)
        self.act = nn.ReLU(inplace=True)
        self.register_load_state_dict_pre_hook(_upgrade_hook)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.pw_up(self.dw_up(_upsample(x, skip.shape[-2:])))
        return self.act(up + self.pw_skip(self.dw_skip(skip)))

    def upgrade_state_keys(self, state_dict: dict, prefix: str) -> None:
        """Rewrite, in place, a concat-era block's keys (``fuse.0`` depthwise, ``fuse.1`` BN, ``fuse.3`` 1x1,
        ``fuse.4`` BN over the concatenated channels) into this block's: channel slices for the
        depthwise stage and the 1x1 weights; the second BN splits as BN(a + b) = BN(a) + s * b, the
        skip's copy with zero mean and bias."""
        if prefix + "fuse.0.weight" not in state_dict:
            return
        old = {k[len(prefix) + len("fuse."):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix + "fuse.")}
        c = self.cin
        new = {"dw_up.0.weight": old["0.weight"][:c], "dw_skip.0.weight": old["0.weight"][c:],
               "pw_up.0.weight": old["3.weight"][:, :c], "pw_skip.0.weight": old["3.weight"][:, c:]}
        for key in ("weight", "bias", "running_mean", "running_var"):
            new[f"dw_up.1.{key}"], new[f"dw_skip.1.{key}"] = old[f"1.{key}"][:c], old[f"1.{key}"][c:]
            new[f"pw_up.1.{key}"] = old[f"4.{key}"]
            keep = key in ("weight", "running_var")
            new[f"pw_skip.1.{key}"] = old[f"4.{key}"] if keep else torch.zeros_like(old[f"4.{key}"])
        for stage in ("dw_up.1", "dw_skip.1", "pw_up.1", "pw_skip.1"):
            batches = "1.num_batches_tracked" if stage.startswith("dw") else "4.num_batches_tracked"
            if batches in old:
                new[f"{stage}.num_batches_tracked"] = old[batches]
        state_dict.update({prefix + k: v for k, v in new.items()})


def _upgrade_hook(module: UpBlock, state_dict: dict, prefix: str, *_) -> None:
    module.upgrade_state_keys(state_dict, prefix)


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
