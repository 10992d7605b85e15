"""Run a Runner over a Source and accumulate segmentation metrics (layer 3)."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.data.transforms import resize_pixels
from edgeseg.metrics import SegMetrics


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class-index mask to (h, w)."""
    if mask.shape == tuple(size):
        return mask
    t = torch.from_numpy(np.array(mask))[None, None].float()  # a copy: masks read from files are read-only
    return F.interpolate(t, size=size, mode="nearest")[0, 0].to(torch.uint8).numpy()


def model_inputs(source, size: tuple[int, int], count: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None, str]]:
    """Yield (pixels resized to the model, mask resized nearest, id) for the first ``count`` samples."""
    n = len(source) if count is None else min(count, len(source))
    for i in range(n):
        image, mask, sid = source.get(i)
        yield resize_pixels(image, size), (None if mask is None else resize_mask(mask, size)), sid


def predict_source(run: Callable[[np.ndarray], np.ndarray], source, size: tuple[int, int], count: int | None = None,
                   on_image: Callable[[], None] | None = None, keep_logits: bool = False):
    """Argmax predictions for a source: (preds [N,H,W] uint8, masks [N,H,W] uint8 | None, ids, logits list).

    ``logits`` is empty unless ``keep_logits``.
    """
    preds, masks, ids, logits = [], [], [], []
    for pixels, mask, sid in model_inputs(source, size, count):
        out = run(pixels[None])[0]
        if keep_logits:
            logits.append(out)
        preds.append(out.argmax(0).astype(np.uint8))
        masks.append(mask)
        ids.append(sid)
        if on_image:
            on_image()
    has_masks = all(m is not None for m in masks)
    return np.stack(preds), (np.stack(masks) if has_masks else None), ids, logits


def evaluate(run: Callable[[np.ndarray], np.ndarray], source, size: tuple[int, int], classes, count: int | None = None) -> SegMetrics:
    """Dataset-level metrics of a runner's argmax against the source's masks."""
    preds, masks, _, _ = predict_source(run, source, size, count)
    m = SegMetrics(len(classes), tuple(classes))
    m.update(preds, masks)
    return m
