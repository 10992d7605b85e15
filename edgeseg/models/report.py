"""The architecture table behind ``edgeseg models``.

The ``int8`` facts come from a committed measurement (``INT8_AUDIT``): exporting every
architecture takes minutes, so ``benchmarks/int8_audit.py`` (``edgeseg.export.int8_audit``)
measures them once and this module only reads the file.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgeseg.models.profile import count_macs, count_params
from edgeseg.models.registry import build_model, get_spec, names

INT8_AUDIT = Path(__file__).parent / "assets" / "int8_audit.json"
NOT_MEASURED = "not measured"


def int8_audit(path: str | Path = INT8_AUDIT) -> dict:
    """The committed int8 audit document (``{}`` when the file is missing)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def model_table(num_classes: int = 2) -> list[dict]:
    """One row per registered architecture: params, MACs and input at its default size, and its
    measured int8 audit entry (``int8``: None when not measured)."""
    audited = int8_audit().get("architectures", {})
    rows = []
    for name in names():
        spec = get_spec(name)
        model = build_model(name, num_classes=num_classes)
        h, w = spec.default_size
        rows.append({"name": name, "params": count_params(model), "macs": count_macs(model, h, w),
                     "input": [h, w], "stride": spec.stride, "description": spec.description,
                     "int8": audited.get(name)})
    return rows


def int8_verdict(entry: dict | None) -> str:
    """One cell for an architecture's int8 audit: 'pure', 'not measured', or per format what stays float, op and
    count ('TFLite pure; ONNX float: Resize x5'), so a float op is never read as a float graph."""
    if not entry or "tflite" not in entry or "onnx" not in entry:
        return NOT_MEASURED
    if all(entry[fmt]["pure_integer"] for fmt in ("tflite", "onnx")):
        return "pure"
    return "; ".join(f"{name} {_float_part(entry[fmt])}" for fmt, name in (("tflite", "TFLite"), ("onnx", "ONNX")))


def _float_part(audit: dict) -> str:
    """'pure', or 'float: OP xN, ...' (else the Q/DQ hops or the ops NNAPI rejects, whichever made it impure)."""
    if audit["pure_integer"]:
        return "pure"
    if audit["float_ops"]:
        return "float: " + ", ".join(f"{op} x{n}" for op, n in audit["float_ops"].items())
    if audit["qdq"]["float"]:
        return f"float: {audit['qdq']['float']} Q/DQ hops"
    return "not integer on NNAPI: rejects " + ", ".join(audit.get("nnapi_rejects") or ["an op"])


def int8_label(entry: dict | None, fmt: str) -> str:
    """One cell for a format's int8 audit: 'pure', 'float: OP xN, ... (K Q/DQ hops)' and the ops an
    EP rejects or the XNNPACK partitions when there is more than one, or 'not measured'."""
    audit = (entry or {}).get(fmt)
    if audit is None:
        return NOT_MEASURED
    parts = []
    if audit["float_ops"] or audit["qdq"]["float"]:
        ops = ", ".join(f"{op} x{n}" for op, n in audit["float_ops"].items())
        parts.append(f"float: {ops} ({audit['qdq']['float']} Q/DQ hops)")
    if audit.get("nnapi_rejects"):
        parts.append("NNAPI rejects " + ", ".join(audit["nnapi_rejects"]))
    if audit.get("xnnpack_partitions", 1) > 1:
        parts.append(f"{audit['xnnpack_partitions']} XNNPACK partitions")
    return "; ".join(parts) if parts else "pure"
