"""The table ``edgeseg export`` prints, and its option parsing (layer 4)."""
from __future__ import annotations

import contextlib
import sys
import warnings

from edgeseg.errors import EdgesegError, GateFailed
from edgeseg.export.base import CALIBRATED_PRECISION
from edgeseg.ui import console, print_table


def parse_thresholds(items, precisions=("fp32", "fp16", "int8", "pal6"), option: str = "--threshold") -> dict:
    """('int8=0.97', ...) -> {'int8': 0.97}; a known precision and 0 < value <= 1, or EdgesegError."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip()
        try:
            number = float(value)
        except ValueError:
            raise EdgesegError(f"{option} expects PRECISION=NUMBER, got {item!r}") from None
        if key not in precisions:
            raise EdgesegError(f"{option} {item!r}: unknown precision {key!r}; use one of {', '.join(precisions)}")
        if not 0.0 < number <= 1.0:  # also false for nan
            raise EdgesegError(f"{option} {item!r}: the minimum agreement must be in (0, 1], e.g. {key}=0.98")
        out[key] = number
    return out


def _f(v, digits=4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def artifact_line(art) -> str:
    """The progress line of one exported file: its name, size and parity verdict."""
    p = art.parity
    verdict = ("parity skipped" if "skipped" in p else "parity FAIL" if p.get("passed") is False else
               "parity ok" if p.get("passed") else "parity not checked")
    return f"  exported {art.path} ({art.bytes / 1024:.0f} KB), {verdict}"


def export_table(manifest) -> None:
    """Format, precision, size, agreement mIoU, GT mIoU (drop vs PyTorch), max |Δlogit|, pass/fail of an
    export's ``Manifest`` (its ``root`` is the export directory)."""
    rows = []
    for a in manifest.artifacts:
        p = a.parity
        if "skipped" in p or "error" in p:
            status = f"skipped: {p['skipped']}" if "skipped" in p else f"FAIL ({p['runtime']} cannot run it): {p['error']}"
            rows.append([a.format, a.precision, f"{a.bytes / 1024:.0f} KB", "-", "-", "-", "-", status])
            continue
        gt = p.get("gt_miou")
        drop = None if gt is None or p.get("reference_gt_miou") is None else (p["reference_gt_miou"] - gt) * 100
        gt_txt = "n/a" if gt is None else f"{gt:.4f} ({-drop:+.2f} pt)"
        stress = p.get("stress")
        stress_txt = "-" if not stress else (f"{stress['agreement_miou']:.4f} {'ok' if stress['passed'] else 'LOW'}"
                                             f"{'' if stress.get('gated', True) else ' (not gated)'}")
        rows.append([a.format, a.precision, f"{a.bytes / 1024:.0f} KB", _f(p["agreement_miou"]), stress_txt, gt_txt,
                     _f(p["max_abs_logit_diff"], 3), f"{'PASS' if p['passed'] else 'FAIL'} ({p['runtime']})"])
    print_table(f"export -> {manifest.root}", ["format", "precision", "size", "agreement mIoU", "stress agreement",
                                               "GT mIoU (vs PyTorch)", "max |Δlogit|", "parity"], rows)
    ref = next((a.parity.get("reference_gt_miou") for a in manifest.artifacts if a.parity.get("reference_gt_miou") is not None), None)
    if ref is not None:
        console.print(f"PyTorch fp32 reference GT mIoU: {ref:.4f}")
    data = (manifest.parity_reference or {}).get("data")
    if data:
        console.print(f"parity images: {data}")
    line = calibration_line(manifest.model.get("calibration") or {})
    if line and any(a.precision == CALIBRATED_PRECISION for a in manifest.artifacts):
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # one line, however long the path


def calibration_line(calibration: dict) -> str:
    """'int8 calibration: SOURCE; onnx minmax, tflite minmax; N images' from the manifest's calibration entry
    ('' when it has no source)."""
    if not calibration.get("source"):
        return ""
    methods = ", ".join(f"{fmt} {method}" for fmt, method in (calibration.get("methods") or {}).items())
    images = calibration.get("images")
    count = f"{images} image{'s' if images != 1 else ''}" if images is not None else ""
    return "; ".join(part for part in (f"int8 calibration: {calibration['source']}", methods, count) if part)


@contextlib.contextmanager
def warning_lines(category: type[Warning]):
    """Print the ``category`` warnings raised in the block as ``warning: ...`` lines on stderr at its end, each
    once, unless it raises anything but a failed gate (bad input says one ``error:`` line, no more); other
    warnings go where they would have gone (e.g. into ``ui.folded_output``)."""
    caught: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", category)
        passed_on = warnings.showwarning

        def show(message, cat, *args, **kwargs):
            if issubclass(cat, category):
                caught.append(str(message))
            else:
                passed_on(message, cat, *args, **kwargs)
        warnings.showwarning = show
        try:
            yield
        except GateFailed:
            _print_warnings(caught)
            raise
        _print_warnings(caught)


def _print_warnings(lines: list[str]) -> None:
    for line in dict.fromkeys(lines):
        print(f"warning: {line}", file=sys.stderr, flush=True)
