"""Start a U-Net with a longer decoder from a trained one (a step of ``make train-default``).

    python scripts/grow_decoder.py runs/portrait_default_ft5/best.pt 48,32,24,16 runs/portrait_default_s2_init.pt

Builds the checkpoint's architecture with ``decoder_channels`` one or more entries longer (the head
moves to a finer stride), copies every tensor whose name and shape match (encoder and the existing
up-blocks), leaves the new up-blocks and the head at their seeded random init, and writes a weights
file for ``edgeseg train --weights``. Prints what was copied and what starts fresh.
"""
from __future__ import annotations

import argparse
import io

import torch

from edgeseg.fsutil import write_bytes_atomic
from edgeseg.models.checkpoint import load_checkpoint, upgrade_state
from edgeseg.models.registry import build_model


def grow(src: str, decoder_channels: tuple[int, ...], dest: str, seed: int = 0) -> tuple[int, list[str]]:
    """Write ``dest``; returns (tensors copied, names of the tensors left at init)."""
    ckpt = load_checkpoint(src)
    options = dict(ckpt.info.options)
    old = tuple(options.get("decoder_channels") or ())
    if decoder_channels[:len(old)] != old or len(decoder_channels) <= len(old):
        raise SystemExit(f"{src}: decoder {list(old)} is not a prefix of the longer {list(decoder_channels)}")
    torch.manual_seed(seed)
    model = build_model(ckpt.info.arch, num_classes=len(ckpt.info.classes), **{**options, "decoder_channels": decoder_channels})
    state = upgrade_state(model, {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()})
    target = model.state_dict()
    copied = {k: v for k, v in state.items() if k in target and tuple(v.shape) == tuple(target[k].shape)
              and not k.startswith("head.")}  # the head now reads a different stride's features
    target.update(copied)
    buf = io.BytesIO()
    torch.save(target, buf)
    write_bytes_atomic(dest, buf.getvalue())
    return len(copied), sorted(set(target) - set(copied))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("decoder_channels", help="the longer decoder, comma-separated, e.g. 48,32,24,16")
    parser.add_argument("out")
    args = parser.parse_args()
    n, fresh = grow(args.checkpoint, tuple(int(c) for c in args.decoder_channels.split(",")), args.out)
    print(f"copied {n} tensors; {len(fresh)} start at init: {', '.join(fresh)}")
