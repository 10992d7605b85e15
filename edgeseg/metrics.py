"""Segmentation metrics (layer 1): confusion-matrix mIoU, pixel accuracy, Boundary IoU.

All metrics are dataset-level: counts are accumulated over images, then divided once.
Pixels labelled ``ignore_index`` (255) never count.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of binary ``mask`` within ``width`` px (chessboard distance) of its contour."""
    m = mask.astype(bool)
    if width <= 0 or not m.any():
        return np.zeros_like(m)
    # erosion with a (2w+1)^2 square via separable running minimum on a padded copy
    pad = np.pad(m, width, mode="edge")
    eroded = _running_all(_running_all(pad, width, axis=0), width, axis=1)[width:-width, width:-width]
    return m & ~eroded


def _running_all(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """True where all values in a window of radius r along axis are True (windows clipped)."""
    c = np.cumsum(np.moveaxis(~a, axis, 0).astype(np.int32), axis=0)
    c = np.concatenate([np.zeros_like(c[:1]), c], axis=0)
    n = c.shape[0] - 1
    idx = np.arange(n)
    lo = np.clip(idx - r, 0, n)
    hi = np.clip(idx + r + 1, 0, n)
    bad = c[hi] - c[lo]
    return np.moveaxis(bad == 0, 0, axis)


def band_width(height: int, width: int, ratio: float = 0.02) -> int:
    """Boundary band width in pixels: ``ratio`` x image diagonal (Cheng et al. 2021), at least 1."""
    return max(1, int(round(ratio * (height**2 + width**2) ** 0.5)))


@dataclass
class SegMetrics:
    """Accumulates confusion counts and boundary intersections over a dataset."""

    num_classes: int
    class_names: tuple[str, ...] | None = None
    boundary_ratio: float = 0.02
    confusion: np.ndarray = field(init=False)
    b_inter: np.ndarray = field(init=False)
    b_union: np.ndarray = field(init=False)
    images: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.b_inter = np.zeros(self.num_classes, dtype=np.int64)
        self.b_union = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray, boundary: bool = True) -> None:
        """Add one image (or a batch) of class-index maps ``pred`` and ``target``."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
        if pred.ndim == 3:
            for p, t in zip(pred, target):
                self.update(p, t, boundary)
            return
        valid = target != IGNORE_INDEX
        k = self.num_classes
        idx = target[valid].astype(np.int64) * k + pred[valid].astype(np.int64)
        self.confusion += np.bincount(idx, minlength=k * k)[: k * k].reshape(k, k)
        self.images += 1
        if boundary:
            w = band_width(*target.shape, self.boundary_ratio)
            for c in range(k):
                gb = boundary_band(target == c, w) & valid
                pb = boundary_band(pred == c, w) & valid
                self.b_inter[c] += np.count_nonzero(gb & pb)
                self.b_union[c] += np.count_nonzero(gb | pb)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both prediction and target."""
        tp = np.diag(self.confusion).astype(np.float64)
        denom = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes present in prediction or target."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.diag(self.confusion).sum() / total) if total else float("nan")

    def boundary_iou(self) -> float:
        """Mean over classes of the dataset-level IoU inside the boundary bands."""
        with np.errstate(invalid="ignore", divide="ignore"):
            per = np.where(self.b_union > 0, self.b_inter / np.maximum(self.b_union, 1), np.nan)
        return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")

    def summary(self) -> dict:
        """JSON-ready dict: miou, per_class_iou (name -> IoU), pixel_accuracy, boundary_iou, images."""
        names = self.class_names or tuple(str(i) for i in range(self.num_classes))
        return {
            "miou": _num(self.miou()),
            "per_class_iou": {n: _num(v) for n, v in zip(names, self.iou())},
            "pixel_accuracy": _num(self.pixel_accuracy()),
            "boundary_iou": _num(self.boundary_iou()),
            "images": self.images,
        }


def _num(v: float) -> float | None:
    return None if v != v else round(float(v), 6)


def agreement_miou(pred: np.ndarray, reference: np.ndarray, num_classes: int) -> float:
    """Dataset-level mIoU of one argmax map set against another (no boundary work)."""
    m = SegMetrics(num_classes)
    m.update(pred, reference, boundary=False)
    return m.miou()


@dataclass
class FlickerMetrics:
    """Temporal flicker over clips: between consecutive frames, the fraction of pixels whose predicted
    class changes while the ground truth does not (pixels ignored in either frame never count).

    ``flicker`` averages that fraction over frame pairs (each pair weighs the same, whatever the clip);
    ``boundary_flicker`` is the same fraction inside the ground truth's boundary band (the band of
    Boundary IoU, every class's contour, in either frame), where a per-frame model shimmers. A static
    clip predicted perfectly scores 0. Call ``start_clip()`` before each clip's first frame.
    """

    boundary_ratio: float = 0.02
    pairs: int = field(default=0, init=False)
    frames: int = field(default=0, init=False)
    clips: int = field(default=0, init=False)
    _total: float = field(default=0.0, init=False)
    _band_total: float = field(default=0.0, init=False)
    _band_pairs: int = field(default=0, init=False)
    _prev: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def start_clip(self) -> None:
        self._prev = None
        self.clips += 1

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add the next frame of the current clip (class-index maps of one shape)."""
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
        if self._prev is None and self.clips == 0:
            self.clips = 1
        self.frames += 1
        prev, self._prev = self._prev, (pred, target)
        if prev is None:
            return
        p0, t0 = prev
        stable = (t0 == target) & (t0 != IGNORE_INDEX) & (target != IGNORE_INDEX)
        changed = (p0 != pred) & stable
        self.pairs += 1
        self._total += np.count_nonzero(changed) / max(np.count_nonzero(stable), 1)
        band = self._band(t0) | self._band(target)
        if np.count_nonzero(band & stable):
            self._band_pairs += 1
            self._band_total += np.count_nonzero(changed & band) / np.count_nonzero(band & stable)

    def _band(self, target: np.ndarray) -> np.ndarray:
        w = band_width(*target.shape, self.boundary_ratio)
        classes = [c for c in np.unique(target) if c != IGNORE_INDEX]
        band = np.zeros(target.shape, bool)
        for c in classes:
            band |= boundary_band(target == c, w)
        return band

    def flicker(self) -> float:
        return self._total / self.pairs if self.pairs else float("nan")

    def boundary_flicker(self) -> float:
        return self._band_total / self._band_pairs if self._band_pairs else float("nan")

    def summary(self) -> dict:
        """JSON-ready: flicker, boundary_flicker, clips, frames, frame_pairs."""
        return {"flicker": _num(self.flicker()), "boundary_flicker": _num(self.boundary_flicker()),
                "clips": self.clips, "frames": self.frames, "frame_pairs": self.pairs}
