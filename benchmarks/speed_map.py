"""Map the int8/fp32 speed of candidate architectures before training any of them.

A file's speed does not depend on its weights' values (dense int8 and float kernels do the same work
for any numbers), so each candidate is built with random weights (BatchNorm statistics drawn at
random, so activations are neither constant nor exploding), exported by ``edgeseg.api.export_module``
(fp32 and int8 ONNX and TFLite, the packaged default's normalization ``(pixel - 114) / 58``, parity not
gated: random weights fail it) and timed by ``arch_probe``'s interleaved sessions. Use it to choose
what to train; the accuracy of a candidate is a training question this script does not answer.

    .venv/bin/python benchmarks/speed_map.py out/speed_map benchmarks/results/speed_map_x86_64-2core
    .venv/bin/python benchmarks/speed_map.py out/speed_map OUT --only default,v4s075_s8 --rounds 60

Candidates (``--only`` picks some): the packaged default's architecture (``default``), the previous
default (``previous``, the speed reference: "int8 TFLite / ref fp32 TFLite"), and MobileNetV3-Small-
Minimal / MobileNetV4-Conv-Small U-Nets at other widths and head strides (``_sN``: logits at stride N;
MobileNetV4-Conv-Small at 0.625 and 0.75 comes from timm's generator, without ImageNet weights).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from arch_probe import measure, publish
from common import run_main

from edgeseg.errors import EdgesegError
from edgeseg.manifest import read_manifest

MEAN, STD = [114.0] * 3, [58.0] * 3  # the packaged default's: int8 TFLite folds it into the uint8 input
SIZE = (256, 256)
PICKS = (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8"))

# name -> (zoo architecture, options)
CANDIDATES = {
    "previous": ("unet_mobilenet_v3_small", {"width": 0.75, "decoder_channels": [48, 32, 24, 16]}),
    "default": ("unet_mobilenet_v3_small_minimal", {"width": 1.0, "decoder_channels": [48, 32, 24, 16]}),
    "v3min_s4": ("unet_mobilenet_v3_small_minimal", {"width": 1.0, "decoder_channels": [48, 32, 24]}),
    "v4s050_s4": ("unet_mobilenetv4_conv_small", {"width": 0.5, "decoder_channels": [64, 48, 32]}),
    "v4s050_s8": ("unet_mobilenetv4_conv_small", {"width": 0.5, "decoder_channels": [64, 48]}),
    "v4s0625_s2": ("unet_mobilenetv4_conv_small", {"width": 0.625, "decoder_channels": [64, 48, 32, 16]}),
    "v4s0625_s4": ("unet_mobilenetv4_conv_small", {"width": 0.625, "decoder_channels": [64, 48, 32]}),
    "v4s0625_s8": ("unet_mobilenetv4_conv_small", {"width": 0.625, "decoder_channels": [64, 48]}),
    "v4s075_s4": ("unet_mobilenetv4_conv_small", {"width": 0.75, "decoder_channels": [64, 48, 32]}),
    "v4s075_s8": ("unet_mobilenetv4_conv_small", {"width": 0.75, "decoder_channels": [64, 48]}),
    "v4s100_s4": ("unet_mobilenetv4_conv_small", {"width": 1.0, "decoder_channels": [64, 48, 32]}),
    "v4s100_s8": ("unet_mobilenetv4_conv_small", {"width": 1.0, "decoder_channels": [64, 48]}),
}


def build(arch: str, options: dict, seed: int):
    """A random-weight candidate in eval mode, BatchNorm statistics drawn from ``seed``."""
    import torch

    from edgeseg.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model(arch, num_classes=2, input_size=SIZE, **options)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def export_candidates(root: Path, names: list[str]) -> list[Path]:
    """Export each candidate into ROOT/NAME (kept when a manifest is already there: delete it to redo)."""
    from edgeseg.api import export_module

    dirs = []
    for i, name in enumerate(names):
        dest = root / name
        if not (dest / "manifest.json").is_file():
            arch, options = CANDIDATES[name]
            print(f"exporting {name} ({arch} {options})", flush=True)
            export_module(build(arch, options, seed=i), dest, classes=["background", "person"], input_size=SIZE,
                          mean=MEAN, std=STD, name=name, formats="onnx,tflite", precisions="fp32,int8", check=False)
        dirs.append(dest)
    return dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", help="folder for the candidates' exports (one subfolder each, reused when present)")
    ap.add_argument("out", help="output stem: writes OUT.json and OUT.md")
    ap.add_argument("--only", help=f"comma-separated candidates (default: all): {', '.join(CANDIDATES)}")
    ap.add_argument("--rounds", type=int, default=40, help="timed runs per file per session")
    ap.add_argument("--sessions", type=int, default=3, help="fresh loads of every file")
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(CANDIDATES)
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise EdgesegError(f"--only: unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    if args.rounds < 3 or args.sessions < 1 or args.warmup < 0:
        raise EdgesegError("--rounds must be >= 3, --sessions >= 1, --warmup >= 0")
    if "previous" not in names:
        names.insert(0, "previous")  # the speed reference
    dirs = export_candidates(Path(args.work), names)
    manifests = {n: read_manifest(d) for n, d in zip(names, dirs)}
    items = [(f"{n}:{fmt}:{prec}", manifests[n], manifests[n].find(fmt, prec)) for n in names for fmt, prec in PICKS]
    doc, table = measure(names, manifests, items, "previous", rounds=args.rounds, sessions=args.sessions,
                         warmup=args.warmup, threads=1)
    doc.update(weights="random (speed only)", candidates={n: CANDIDATES[n] for n in names})
    md = (f"# Speed map: candidates with random weights (speed only, no accuracy), 1 thread, {args.sessions} fresh "
          f"loads x {args.rounds} interleaved runs\n\n`benchmarks/speed_map.py`; int8 TFLite takes uint8 pixels "
          "(normalization (pixel - 114) / 58 folded into its input), float files normalized input (their time "
          "includes normalizing the frame). Reference: `previous` (the default before the int8-friendly one).\n\n"
          + table)
    publish(args.out, doc, md)


if __name__ == "__main__":
    run_main(main)
