"""``edgeseg predict``: run any model on images of any size and write masks or composites (layer 3).

Each image is resized to the model input, the logits are mapped back to the original size
(bilinear), and the foreground matte is ``1 - P(background)``. A bad image is reported and
skipped; the rest are still processed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.apply import compose
from edgeseg.apply.refine import refine_alpha
from edgeseg.data.images import IMAGE_SUFFIXES, load_image
from edgeseg.data.transforms import resize_pixels
from edgeseg.errors import DataError, EdgesegError
from edgeseg.fsutil import atomic_path
from edgeseg.runtime.loader import open_model

OUTPUTS = ("mask", "alpha", "cutout", "blur", "replace", "overlay")


@dataclass
class Prediction:
    """Full-resolution outputs for one image."""

    classes: np.ndarray  # uint8 [H, W]
    alpha: np.ndarray  # float32 [H, W] in [0, 1]: foreground probability (or refined matte)


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)


def expand_inputs(inputs) -> list[Path]:
    """Files as given, folders expanded (sorted, image suffixes only); missing paths are kept to be reported."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(item)
    return out


def predict_image(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, input_size, *, refine: bool = False) -> Prediction:
    """Segment one uint8 RGB image of any size; outputs at the image's own size."""
    logits = run(resize_pixels(image, input_size)[None])
    h, w = image.shape[:2]
    probs = F.interpolate(torch.from_numpy(logits), size=(h, w), mode="bilinear", align_corners=False).softmax(1)[0]
    alpha = (1.0 - probs[0]).numpy().astype(np.float32)
    classes = probs.argmax(0).to(torch.uint8).numpy()
    if refine:
        alpha = refine_alpha(image, alpha)
        if probs.shape[0] == 2:
            classes = (alpha >= 0.5).astype(np.uint8)
    return Prediction(classes, alpha)


def render(mode: str, image: np.ndarray, pred: Prediction, background: np.ndarray | None):
    """The PIL image for one output mode."""
    if mode == "mask":
        return compose.palette_mask(pred.classes)
    if mode == "alpha":
        return compose.alpha_matte(pred.alpha)
    if mode == "cutout":
        return compose.cutout(image, pred.alpha)
    if mode == "blur":
        return compose.blur_background(image, pred.alpha)
    if mode == "replace":
        return compose.replace_background(image, pred.alpha, background)
    return compose.overlay(image, pred.classes)


def predict_files(model: str | None, inputs, out_dir: str | Path, *, output: str = "mask", background: str | None = None,
                  refine: bool = False, threads: int | None = None, pick: str | None = None,
                  on_progress: Callable[[Path], None] | None = None) -> PredictReport:
    """Segment every input image and write ``out_dir/<stem>.png`` per image."""
    if output not in OUTPUTS:
        raise EdgesegError(f"unknown output {output!r}; choose from {', '.join(OUTPUTS)}")
    if output == "replace" and not background:
        raise EdgesegError("--output replace needs --background IMAGE")
    bg = load_image(background) if background else None
    files = expand_inputs(inputs)
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    out_dir = Path(out_dir)
    report = PredictReport()
    runner, view = open_model(model, threads=threads, pick=pick)
    with runner:
        for path in files:
            try:
                image = load_image(path)
            except DataError as exc:
                report.failed.append((str(path), str(exc)))
            else:
                pred = predict_image(runner.run, image, view.input_size, refine=refine)
                dest = out_dir / f"{path.stem}.png"
                with atomic_path(dest) as tmp:
                    render(output, image, pred, bg).save(tmp, format="PNG")
                report.written.append(dest)
            if on_progress:
                on_progress(path)
    return report
