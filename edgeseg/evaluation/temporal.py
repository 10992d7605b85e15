"""Evaluate a model on clips (ordered frames with masks): the usual metrics over every frame plus
temporal flicker, optionally through the stabilizer (layer 3)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeseg.evaluation.accumulate import model_inputs
from edgeseg.metrics import FlickerMetrics, SegMetrics
from edgeseg.runtime.stabilizer import SmoothCfg, frame_run


def clip_predictions(run: Callable[[np.ndarray], np.ndarray], clip_source, size: tuple[int, int],
                     smooth: SmoothCfg | bool | None = None):
    """Yield (argmax prediction, mask) per frame of one clip, in order; ``smooth``: stabilize
    (a fresh stabilizer per clip)."""
    step = frame_run(run, smooth)
    for pixels, mask, _ in model_inputs(clip_source, size):
        yield np.asarray(step(pixels[None]))[0].argmax(0).astype(np.uint8), mask


def evaluate_clips(run: Callable[[np.ndarray], np.ndarray], clips, size: tuple[int, int], classes,
                   smooth: SmoothCfg | bool | None = None,
                   on_frame: Callable[[], None] | None = None) -> tuple[SegMetrics, FlickerMetrics]:
    """Dataset-level segmentation metrics over every frame of ``clips`` (``data.clips.Clip``s) and their flicker."""
    seg, flicker = SegMetrics(len(classes), tuple(classes)), FlickerMetrics()
    for clip in clips:
        flicker.start_clip()
        for pred, mask in clip_predictions(run, clip.source, size, smooth):
            seg.update(pred, mask)
            flicker.update(pred, mask)
            if on_frame:
                on_frame()
    return seg, flicker


def smooth_params(smooth: SmoothCfg | bool | None) -> dict | None:
    """What a result records about the stabilizer: its parameters, or None when off."""
    if not smooth:
        return None
    return (smooth if isinstance(smooth, SmoothCfg) else SmoothCfg()).to_dict()
