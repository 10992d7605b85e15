"""Fairness slices: IoU per slice (skin tone, lighting, ...) and the worst-slice gap (layer 3)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgeseg.errors import DataError
from edgeseg.metrics import SegMetrics


def read_slices(path: str | Path) -> dict[str, dict[str, str]]:
    """CSV with an ``id`` column and one column per slice attribute -> {id: {attr: value}}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"slices file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "id" not in reader.fieldnames or len(reader.fieldnames) < 2:
            raise DataError(f"{path}: needs a header with 'id' and at least one slice column")
        return {row["id"]: {k: v for k, v in row.items() if k != "id"} for row in reader}


def slice_report(preds: np.ndarray, masks: np.ndarray, ids: list[str], slices: dict[str, dict[str, str]],
                 classes: tuple[str, ...]) -> dict:
    """Per attribute: IoU per slice value and the worst-slice gap.

    The IoU is foreground IoU for two classes (as model cards report person IoU), else mIoU.
    Images missing from ``slices`` are left out of the report.
    """
    groups: dict[str, dict[str, SegMetrics]] = {}
    for p, m, i in zip(preds, masks, ids):
        for attr, value in slices.get(i, {}).items():
            acc = groups.setdefault(attr, {}).setdefault(value, SegMetrics(len(classes), classes))
            acc.update(p, m, boundary=False)
    report = {}
    for attr, by_value in sorted(groups.items()):
        ious = {v: (float(acc.iou()[1]) if len(classes) == 2 else acc.miou()) for v, acc in sorted(by_value.items())}
        counts = {v: acc.images for v, acc in sorted(by_value.items())}
        finite = [x for x in ious.values() if x == x]
        worst = min(ious, key=lambda v: ious[v] if ious[v] == ious[v] else 2.0)
        report[attr] = {"iou": {v: (None if x != x else round(x, 6)) for v, x in ious.items()}, "images": counts, "worst": worst,
                        "gap": round(max(finite) - min(finite), 6) if finite else None}
    return report
