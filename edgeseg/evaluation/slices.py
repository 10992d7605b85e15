"""Fairness slices: IoU per slice (skin tone, lighting, ...) and the worst-slice gap (layer 3)."""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np

from edgeseg.errors import DataError
from edgeseg.metrics import SegMetrics


def read_slices(path: str | Path) -> dict[str, dict[str, str]]:
    """CSV with an ``id`` column and one column per slice attribute -> {id: {attr: value}}.

    DataError naming the file (and line) for a missing, binary or ragged file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"slices file not found: {path}")
    try:
        return _slice_rows(csv.DictReader(io.StringIO(_csv_text(path), newline="")), path)
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV ({exc}); --slices needs a CSV with an 'id' column") from None


_NOT_TEXT = "{path}: not a CSV text file ({why}); --slices needs a UTF-8 CSV with an 'id' column"


def _csv_text(path: Path) -> str:
    """The file's text (a UTF-8 byte-order mark, as spreadsheets write, is dropped); DataError if binary."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(_NOT_TEXT.format(path=path, why=f"byte {exc.start} is not UTF-8 text")) from None
    if "\0" in text:
        raise DataError(_NOT_TEXT.format(path=path, why="it contains NUL bytes"))
    return text


def _slice_rows(reader: csv.DictReader, path: Path) -> dict[str, dict[str, str]]:
    """{id: {attr: value}} from a reader; DataError for a missing header or a ragged line."""
    if not reader.fieldnames or "id" not in reader.fieldnames or len(reader.fieldnames) < 2:
        raise DataError(f"{path}: needs a header with 'id' and at least one slice column")
    rows = {}
    for row in reader:
        if None in row or None in row.values():
            raise DataError(f"{path}: line {reader.line_num} has {'more' if None in row else 'fewer'} values "
                            f"than the header's {len(reader.fieldnames)}")
        rows[row["id"]] = {k: v for k, v in row.items() if k != "id"}
    return rows


class SliceWarning(UserWarning):
    """Images of the evaluated set that the --slices CSV has no row for (``edgeseg eval`` prints a ``warning:`` line)."""


def check_slice_ids(slices: dict[str, dict[str, str]], ids: list[str]) -> None:
    """DataError (exit 2) when no id of ``slices`` is one of the image ``ids`` (the slice table would be empty);
    SliceWarning with the count when only some images have a row."""
    missing = [i for i in ids if i not in slices]
    if ids and len(missing) == len(ids):
        example = f"e.g. {next(iter(slices))!r}" if slices else "no rows"
        raise DataError(f"--slices: no id in the CSV matches an image (the CSV has {example}, the images e.g. "
                        f"{ids[0]!r}); ids are the image's path under images/ without its extension ('x' for images/x.jpg, "
                        "'trip/x' for images/trip/x.jpg)")
    if missing:
        warnings.warn(SliceWarning(f"--slices: {len(missing)} of {len(ids)} images have no row in the CSV (e.g. "
                                   f"{missing[0]!r}) and are left out of the slice table; ids are paths under images/ without the extension"),
                      stacklevel=2)


def slice_report(preds: np.ndarray, masks: np.ndarray, ids: list[str], slices: dict[str, dict[str, str]],
                 classes: tuple[str, ...]) -> dict:
    """Per attribute: IoU per slice value and the worst-slice gap.

    The IoU is foreground IoU for two classes (as model cards report person IoU), else mIoU. A
    two-class slice whose masks hold no foreground (the synthetic 'none' hair type and skin tone:
    no person in the picture) has no person IoU (None, "n/a"; any pixel predicted as person would
    make it 0), so it is neither the worst slice nor in the gap.
    Images missing from ``slices`` are left out of the report.
    """
    groups: dict[str, dict[str, SegMetrics]] = {}
    for p, m, i in zip(preds, masks, ids):
        for attr, value in slices.get(i, {}).items():
            acc = groups.setdefault(attr, {}).setdefault(value, SegMetrics(len(classes), classes))
            acc.update(p, m, boundary=False)
    report = {}
    for attr, by_value in sorted(groups.items()):
        ious = {v: _slice_iou(acc, len(classes)) for v, acc in sorted(by_value.items())}
        counts = {v: acc.images for v, acc in sorted(by_value.items())}
        finite = [x for x in ious.values() if x == x]
        worst = min(ious, key=lambda v: ious[v] if ious[v] == ious[v] else 2.0)
        report[attr] = {"iou": {v: (None if x != x else round(x, 6)) for v, x in ious.items()}, "images": counts, "worst": worst,
                        "gap": round(max(finite) - min(finite), 6) if finite else None}
    return report


def _slice_iou(acc: SegMetrics, num_classes: int) -> float:
    """Foreground IoU for two classes (NaN when the slice's masks have no foreground pixel), else mIoU."""
    if num_classes != 2:
        return acc.miou()
    return float(acc.iou()[1]) if acc.confusion[1].sum() > 0 else float("nan")
