"""Parity of an exported file against the PyTorch fp32 reference (layer 3).

Shared by the export gate and ``edgeseg bench``: the export calls ``reference_set`` once and
stores it in the export directory (``edgeseg.bench.stored_reference``); both call
``check_parity`` per Runner, bench against the stored reference.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edgeseg.data.corruptions import CORRUPTIONS, real_photo_count, real_photo_key, stress_images
from edgeseg.metrics import SegMetrics, agreement_miou
from edgeseg.recipe import ExportCfg
from edgeseg.runtime.base import Runner
from edgeseg.evaluation.accumulate import model_inputs

# the export defaults (``ExportCfg``), for files whose manifest predates recording its own
_DEFAULTS = ExportCfg()
DEFAULT_THRESHOLDS = _DEFAULTS.thresholds
DEFAULT_STRESS_THRESHOLDS = _DEFAULTS.stress_thresholds
DEFAULT_MAX_GT_DROP = _DEFAULTS.max_gt_drop  # mIoU points


@dataclass
class ReferenceSet:
    """Parity images, their labels (if any) and the PyTorch fp32 outputs on them."""

    images: np.ndarray  # uint8 [N, H, W, 3] at the model's input size
    masks: np.ndarray | None  # uint8 [N, H, W]
    ids: list[str]
    logits: np.ndarray | None  # [N, C, H, W]: float32, float16 when stored; None when not kept (argmax only)
    classes: tuple[str, ...]
    description: str
    slices: dict | None = None  # image id -> {attribute: value}, for per-slice IoU
    stress: "ReferenceSet | None" = None  # its stress set (``stress_set``), when checked
    argmax: np.ndarray | None = None  # uint8 [N, H, W] of the fp32 logits; computed from ``logits`` when not given

    def __post_init__(self):
        if self.argmax is None:
            self.argmax = self.logits.argmax(1).astype(np.uint8)

    def take(self, index) -> "ReferenceSet":
        """The images at ``index`` (a list of positions), without a stress set."""
        index = list(index)
        return replace(self, images=self.images[index], masks=None if self.masks is None else self.masks[index],
                       ids=[self.ids[i] for i in index], logits=None if self.logits is None else self.logits[index],
                       argmax=self.argmax[index], stress=None)

    def head(self, n: int) -> "ReferenceSet":
        """The first ``n`` images (all when there are fewer), with the stress set an export of those ``n`` images
        makes (``stress_subset``): the same make-up as the full set's."""
        if n >= len(self.images):
            return self
        sub = self.take(range(n))
        if self.stress is not None:
            sub.stress = self.stress.take(stress_subset(self.stress.ids, self.ids, n))
        return sub

    def gt_miou(self, preds: np.ndarray) -> float | None:
        if self.masks is None:
            return None
        m = SegMetrics(len(self.classes), self.classes)
        m.update(preds, self.masks, boundary=False)
        return m.miou()


def reference_set(reference: Runner, source, size: tuple[int, int], count: int, classes, description: str) -> ReferenceSet:
    """Run the PyTorch reference over the first ``count`` images of ``source``."""
    items = list(model_inputs(source, size, count))
    images = np.stack([p for p, _, _ in items])
    masks = None if any(m is None for _, m, _ in items) else np.stack([m for _, m, _ in items])
    logits = np.concatenate([reference.run(img[None]) for img in images])
    attrs = getattr(source, "attrs", None)  # the built-in set describes each image (skin tone, lighting, ...)
    slices = None if attrs is None else {sid: attrs(k) for k, (_, _, sid) in enumerate(items)}
    return ReferenceSet(images, masks, [i for _, _, i in items], logits, tuple(classes), description, slices)


def stress_set(reference: Runner, ref: ReferenceSet) -> ReferenceSet:
    """The stress set of ``ref``: its images under phone-camera corruptions plus real photographs
    (``edgeseg.data.corruptions.stress_images``), with the reference's logits on them; no labels."""
    images, ids = stress_images(ref.images, ref.ids, tuple(ref.images.shape[1:3]))
    logits = run_all(reference, images)
    return ReferenceSet(images, None, ids, logits, ref.classes, f"stress set of {ref.description}")


def stress_subset(stress_ids: list[str], ids: list[str], n: int) -> list[int]:
    """Positions in a stored stress set (of the parity images ``ids``) of the stress set of the first ``n``: the
    images made from them, and the first ``real_photo_count(n)`` real photos in ``real_photo_key`` order, so it
    holds the same share of real photos as the full set (what ``stress_images`` makes from ``n`` images)."""
    kept, parity = set(ids[:n]), set(ids)
    real = sorted((k for k, sid in enumerate(stress_ids) if _source_id(sid) not in parity),
                  key=lambda k: real_photo_key(stress_ids[k]))
    chosen = set(real[:real_photo_count(n)])
    return [k for k, sid in enumerate(stress_ids) if _source_id(sid) in kept or k in chosen]


def _source_id(stress_id: str) -> str:
    """'p3:jpeg' -> 'p3' (the image it was made from); 'grace_hopper:square' -> itself."""
    base, _, last = stress_id.rpartition(":")
    return base if base and last in CORRUPTIONS else stress_id


def _group(image_id: str) -> str:
    """'p3:jpeg' -> 'jpeg'; 'grace_hopper:square' -> 'real photo'; 'grace_hopper:square:jpeg' -> 'jpeg'."""
    parts = image_id.split(":")
    return parts[-1] if parts[-1] in CORRUPTIONS else "real photo"


def check_stress(runner: Runner, stress: ReferenceSet, *, threshold: float) -> dict:
    """The ``parity.stress`` block: argmax agreement mIoU with the reference over the stress set,
    per corruption too, and pass/fail against ``threshold``."""
    preds = run_all(runner, stress.images).argmax(1).astype(np.uint8)
    n = len(stress.classes)
    agreement = agreement_miou(preds, stress.argmax, n)
    groups: dict[str, list[int]] = {}
    for k, image_id in enumerate(stress.ids):
        groups.setdefault(_group(image_id), []).append(k)
    per = {g: round(float(agreement_miou(preds[v], stress.argmax[v], n)), 4) for g, v in groups.items()}
    return {"agreement_miou": round(float(agreement), 6), "images": int(len(stress.images)),
            "corruptions": sorted(g for g in groups if g != "real photo"), "real_photos": len(groups.get("real photo", [])),
            "per_corruption": per, "threshold": threshold, "passed": bool(agreement >= threshold)}


def run_all(runner: Runner, images: np.ndarray) -> np.ndarray:
    """Logits of a runner for each image (batch 1, as phones run)."""
    return np.concatenate([runner.run(img[None]) for img in images])


def check_parity(runner: Runner, ref: ReferenceSet, *, threshold: float, max_gt_drop: float = DEFAULT_MAX_GT_DROP,
                 stress: ReferenceSet | None = None, stress_threshold: float | None = None,
                 gate_stress: bool = True) -> dict:
    """The manifest ``parity`` block for one runner: agreement/GT mIoU, max |Δlogit|, pass/fail.

    When ``ref`` has slices and labels, adds IoU per slice ("slices"). With a ``stress`` set, adds
    the ``stress`` block (``check_stress``, with ``gated``); with ``gate_stress`` the file passes only if both pass.
    """
    logits = run_all(runner, ref.images)
    preds = logits.argmax(1).astype(np.uint8)
    agreement = agreement_miou(preds, ref.argmax, len(ref.classes))
    gt = ref.gt_miou(preds)
    ref_gt = ref.gt_miou(ref.argmax)
    passed = agreement >= threshold
    if gt is not None and ref_gt is not None:
        passed = passed and (ref_gt - gt) * 100 <= max_gt_drop
    extra = {}
    if stress is not None:
        extra["stress"] = {**check_stress(runner, stress, threshold=stress_threshold), "gated": gate_stress}
        passed = passed and (extra["stress"]["passed"] or not gate_stress)
    if ref.slices and ref.masks is not None:
        from edgeseg.evaluation.slices import slice_report

        extra["slices"] = slice_report(preds, ref.masks, ref.ids, ref.slices, ref.classes)
    return {
        **extra,
        "reference": "pytorch-fp32", "runtime": runner.runtime, "images": int(len(ref.images)), "data": ref.description,
        "agreement_miou": round(float(agreement), 6), "gt_miou": None if gt is None else round(gt, 6),
        "reference_gt_miou": None if ref_gt is None else round(ref_gt, 6),
        "max_abs_logit_diff": None if ref.logits is None else round(float(np.abs(logits - ref.logits).max()), 6),
        "reference_logits": None if ref.logits is None else str(ref.logits.dtype),
        "threshold": threshold, "max_gt_drop_points": max_gt_drop, "passed": bool(passed),
    }


def skipped(reason: str, threshold: float) -> dict:
    """The parity block when no runtime for the file exists here."""
    return {"skipped": reason, "threshold": threshold, "passed": None}


def cannot_run(reason: str, runtime: str, threshold: float) -> dict:
    """The parity block of a file its runtime (or interpreter) could not load or run: a finding about the
    file, so it fails (``passed`` False) with the reason, and the export keeps its other files."""
    return {"error": reason, "runtime": runtime, "threshold": threshold, "passed": False}


def unchecked(reason: str, threshold: float | None) -> dict:
    """The parity block when nothing can be compared with (no usable stored reference): ``passed`` None,
    which the bench gate fails (a row that cannot be checked never passes)."""
    return {"unchecked": reason, "threshold": threshold, "passed": None}
