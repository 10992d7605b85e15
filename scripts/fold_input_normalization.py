"""Give a trained model one integer mean and one std for all channels (a step of ``make train-default``).

    python scripts/fold_input_normalization.py runs/portrait_default_s2/best.pt 114 58 runs/portrait_default_folded.pt

An int8 TFLite file folds such a normalization into its uint8 input's quantization, so its graph has no
normalization op (``edgeseg.runtime.base.folds_into_uint8_input``); a per-channel one (ImageNet's)
costs an op at full resolution. The model's first convolution absorbs the change: per input channel its
weights scale by ``S / std_c`` and the offset ``(M - mean_c) / std_c`` moves into its bias, or into the
running mean of the BatchNorm after it. Exact except where that convolution reads its zero padding (the
image's outer rows and columns), whose normalized value stays 0: choose M between the old means to keep
that offset small. Writes a checkpoint with the new mean/std in its model info and recipe.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from edgeseg.models.checkpoint import load_checkpoint, save_checkpoint


def _first_conv(model: torch.nn.Module) -> tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d | None]:
    """The first conv reading the 3-channel image, and the BatchNorm right after it when it has no bias."""
    modules = list(model.modules())
    index, conv = next((i, m) for i, m in enumerate(modules) if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3)
    if conv.groups != 1:
        raise SystemExit(f"the first convolution is grouped ({conv.groups} groups); its input channels do not mix")
    if conv.bias is not None:
        return conv, None
    bn = next((m for m in modules[index + 1:] if isinstance(m, torch.nn.BatchNorm2d)), None)
    if bn is None or bn.num_features != conv.out_channels or bn.running_mean is None:
        raise SystemExit("the first convolution has no bias and no BatchNorm with running statistics after it")
    return conv, bn


def fold(src: str, mean: float, std: float, dest: str) -> float:
    """Write ``dest``: ``src`` taking ``(pixel - mean) / std`` on every channel. Returns the largest offset
    folded, ``max |mean - mean_c| / std_c`` (the error at the zero-padded border, in normalized units)."""
    if not float(mean).is_integer() or not 0 <= mean <= 255 or std <= 0:
        raise SystemExit(f"mean {mean:g} / std {std:g}: the mean must be an integer in 0..255 and the std positive")
    ckpt = load_checkpoint(src)
    model = ckpt.model().float().eval()
    conv, bn = _first_conv(model)
    old_mean, old_std = torch.tensor(ckpt.info.mean), torch.tensor(ckpt.info.std)
    scale, offset = std / old_std, (mean - old_mean) / old_std  # old normalized = scale * new + offset
    with torch.no_grad():
        shift = (conv.weight * offset.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        conv.weight.mul_(scale.view(1, 3, 1, 1))
        if bn is None:
            conv.bias.add_(shift)
        else:
            bn.running_mean.sub_(shift)  # BN(y + shift) with mean mu == BN(y) with mean mu - shift
    info = dataclasses.replace(ckpt.info, mean=(float(mean),) * 3, std=(float(std),) * 3)
    recipe = {**ckpt.recipe, "data": {**ckpt.recipe.get("data", {}), "mean": [float(mean)] * 3, "std": [float(std)] * 3}}
    save_checkpoint(dest, model, info, recipe=recipe, metrics=ckpt.metrics)
    return float(offset.abs().max())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("mean", type=float, help="one integer mean for all channels, 0-255 pixel units")
    parser.add_argument("std", type=float, help="one std for all channels")
    parser.add_argument("out")
    args = parser.parse_args()
    worst = fold(args.checkpoint, args.mean, args.std, args.out)
    print(f"wrote {args.out}: (pixel - {args.mean:g}) / {args.std:g}; largest offset at the zero-padded border {worst:.3f}")
