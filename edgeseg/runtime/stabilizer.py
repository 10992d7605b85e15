"""A temporal stabilizer for video: confidence-gated blending of each frame's class probabilities
with the previous frame's smoothed ones, and a small hold on the class shown last (layer 2, numpy only).

Per pixel, at the model's output resolution, for frame t with class probabilities p (softmax of
the logits, C classes):

    conf = (max(p) - 1/C) / (1 - 1/C)          # 0 when the model is unsure, 1 when certain
    w    = min_weight + (1 - min_weight) * conf ** gamma
    s    = s_prev + w * (p - s_prev)             # s = p on the first frame of a clip
    q    = s;  q[last] += hold;  q /= 1 + hold   # last: the class this pixel showed on frame t-1
    class = argmax(q); the output probabilities are q

A confident pixel follows the current frame at once (moving edges are not dragged behind), an
unsure one leans on its history, and a pixel changes class only when the new class leads by more
than ``hold`` (the edge shimmer of a per-frame model is mostly unsure pixels changing their mind).
About fifteen operations per pixel, no learned weights: a fragment shader or a few lines of
Kotlin/Swift over the model's output buffer (README "Video"). Defaults chosen on synthetic clips
(seed 7) and checked on others (README "Video").

``Stabilized`` wraps a Runner's ``run`` and returns ``log(s)`` as logits, so everything downstream
(argmax, softmax, bilinear upsampling, compositing) is unchanged: softmax(log s) = s.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass(frozen=True)
class SmoothCfg:
    """The stabilizer's parameters; the defaults are the one source of ``--smooth``'s values."""

    min_weight: float = 0.5  # weight of the current frame where the model is unsure
    gamma: float = 1.0  # how quickly confidence hands the pixel back to the current frame
    hold: float = 0.3  # probability lead a new class needs over the class shown last

    def __post_init__(self) -> None:
        if not 0.0 < self.min_weight <= 1.0:
            raise EdgesegError(f"stabilizer min_weight {self.min_weight}: expected a number in (0, 1]")
        if not self.gamma > 0.0:
            raise EdgesegError(f"stabilizer gamma {self.gamma}: expected a positive number")
        if not 0.0 <= self.hold < 1.0:
            raise EdgesegError(f"stabilizer hold {self.hold}: expected a number in [0, 1)")

    def to_dict(self) -> dict:
        return {"method": "confidence-gated blend", **asdict(self)}


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax over ``axis`` (the class axis of NCHW logits)."""
    z = np.exp(logits - logits.max(axis, keepdims=True))
    return z / z.sum(axis, keepdims=True)


class Stabilizer:
    """Holds one clip's smoothed probabilities and last classes; ``step(p)`` takes one frame's
    [N, C, H, W] probabilities and returns the stabilized ones (``q`` above). ``reset()`` between clips."""

    def __init__(self, cfg: SmoothCfg | None = None):
        self.cfg = cfg or SmoothCfg()
        self._state: np.ndarray | None = None
        self._last: np.ndarray | None = None  # [N, 1, H, W] class shown on the previous frame

    def reset(self) -> None:
        self._state = self._last = None

    def step(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, np.float32)
        prev = self._state
        if prev is None or prev.shape != proba.shape:
            self._state, self._last = proba.copy(), None
        else:
            self._state = prev + self._weight(proba) * (proba - prev)
        out = self._held(self._state)
        self._last = out.argmax(1)[:, None]
        return out

    def _weight(self, proba: np.ndarray) -> np.ndarray:
        """Per pixel, the weight of the current frame: ``min_weight`` when unsure, 1 when certain."""
        classes = proba.shape[1]
        conf = (proba.max(1, keepdims=True) - 1.0 / classes) * (classes / max(classes - 1, 1))
        if self.cfg.gamma != 1.0:
            conf = conf ** self.cfg.gamma
        return self.cfg.min_weight + (1.0 - self.cfg.min_weight) * conf

    def _held(self, smoothed: np.ndarray) -> np.ndarray:
        """``smoothed`` with ``hold`` added to each pixel's last class, renormalized."""
        if self._last is None or not self.cfg.hold:
            return smoothed
        out = smoothed.copy()
        np.put_along_axis(out, self._last, np.take_along_axis(out, self._last, 1) + self.cfg.hold, 1)
        return out / (1.0 + self.cfg.hold)


class Stabilized:
    """``run`` with a Stabilizer in front: same contract (uint8 NHWC -> float32 NCHW logits), the logits
    being ``log`` of the smoothed probabilities. Call ``reset()`` at the start of each clip."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], cfg: SmoothCfg | None = None):
        self._run = run
        self.stabilizer = Stabilizer(cfg)

    def reset(self) -> None:
        self.stabilizer.reset()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        smoothed = self.stabilizer.step(softmax(np.asarray(self._run(images), np.float32)))
        return np.log(np.maximum(smoothed, 1e-12)).astype(np.float32)


def frame_run(run: Callable[[np.ndarray], np.ndarray], smooth: SmoothCfg | bool | None):
    """``run`` itself (no smoothing) or a ``Stabilized`` wrapper: True means the default parameters."""
    if not smooth:
        return run
    return Stabilized(run, smooth if isinstance(smooth, SmoothCfg) else SmoothCfg())
