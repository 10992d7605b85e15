"""``edgeseg inspect``: what an exported file is, measured from the file itself (layer 4).

Inputs/outputs, op histogram, parameter count, size, precision, embedded metadata, and
delegate coverage: XNNPACK partitions for TFLite, ONNX Runtime's NNAPI / Core ML EP
partitioning check for ONNX, the ML Program op list for Core ML, and for an ExecuTorch program the
delegate calls (backend id, the XNNPACK graph each one runs) against the operators it calls outside
any delegate.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from edgeseg.compat import import_coremltools
from edgeseg.errors import ArtifactError, require
from edgeseg.export.inspect_pte import describe_pte, executorch_op_places, print_executorch_coverage
from edgeseg.manifest import MANIFEST_NAME, Artifact, Manifest, file_digest, find_artifact_for_file


def inspect_file(path: str | Path) -> dict:
    """A JSON-ready description of an .onnx, .tflite, .mlpackage or .pte file; reading never modifies it.

    A file that an edgeseg manifest.json beside it lists is first checked against that entry
    (sha256, inside the directory; ArtifactError otherwise), so the precision and parity reported
    from the manifest are this file's.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"model file not found: {path}")
    kind = {".onnx": _onnx, ".tflite": _tflite, ".mlpackage": _coreml, ".pte": describe_pte}.get(path.suffix)
    if kind is None:
        raise ArtifactError(f"{path}: unknown model type (expected .onnx, .tflite, .mlpackage or .pte)")
    manifest, entry = _manifest_entry(path)
    if entry is not None:
        entry.verified_file()
    size, digest = file_digest(path)
    info = {"file": str(path), "bytes": size, "sha256": digest}
    info.update(kind(path))
    if entry is not None:
        info["manifest"] = {"precision": entry.precision, "quantized": entry.quantized, "parity": entry.parity}
        info.setdefault("macs", manifest.model.get("macs"))
    return info


def _manifest_entry(path: Path) -> tuple[Manifest | None, Artifact | None]:
    """(manifest, this file's entry) from an edgeseg manifest.json beside ``path``, or (None, None).

    A manifest.json that is not edgeseg's (another tool's, or damaged), or that does not list the
    file, is ignored: the file itself is still described.
    """
    if not (path.parent / MANIFEST_NAME).is_file():
        return None, None
    try:
        return find_artifact_for_file(path)
    except ArtifactError:
        return None, None


def _onnx(path: Path) -> dict:
    onnx = require("onnx", "onnx", "inspecting ONNX files")
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ArtifactError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from None
    g = model.graph
    if not g.node or not g.output or not model.opset_import:
        # protobuf has no end marker: an empty file, or one cut at a field boundary, parses
        raise ArtifactError(f"{path}: not a complete ONNX model (no graph nodes, outputs or opset; "
                            "empty or truncated file?)")

    def tensor(v):
        t = v.type.tensor_type
        return {"name": v.name, "shape": [d.dim_value or d.dim_param for d in t.shape.dim],
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    params = sum(int(np.prod(i.dims)) for i in g.initializer)
    ops = Counter(n.op_type for n in g.node)
    coverage = {}
    for ep, fn in (("nnapi", lambda: uc.check_nnapi_partitions(model, True)),
                   ("coreml_mlprogram", lambda: uc.check_coreml_partitions(model, True, "coreml_supported_mlprogram_ops.md"))):
        info = fn()
        coverage[ep] = {"nodes": info.num_nodes, "supported_nodes": info.num_supported_nodes,
                        "partitions": info.num_partitions, "unsupported_ops": sorted(info.unsupported_ops)}
    return {"format": "onnx", "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "inputs": [tensor(v) for v in g.input], "outputs": [tensor(v) for v in g.output], "params": params,
            "ops": dict(ops.most_common()), "metadata": {p.key: p.value for p in model.metadata_props},
            "delegate_coverage": coverage}


def _tflite(path: Path) -> dict:
    litert = require("ai_edge_litert.interpreter", "tflite", "inspecting TFLite files")
    from edgeseg.export.mediapipe_metadata import read_segmenter_metadata
    from edgeseg.export.tflite_convert import xnnpack_partitions

    data = path.read_bytes()
    try:
        interp = litert.Interpreter(model_content=data, experimental_preserve_all_tensors=False)
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: LiteRT cannot load it ({str(exc).splitlines()[0][:160]})") from None

    def tensor(d):
        out = {"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        scale, zero = d["quantization"]
        if scale:
            out["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
        return out

    details = interp._get_ops_details()
    ops = Counter(op["op_name"] for op in details)
    params = _constant_elements(interp, details)
    partitions, left_out = xnnpack_partitions(data)
    meta = read_segmenter_metadata(data)
    return {"format": "tflite", "inputs": [tensor(d) for d in interp.get_input_details()],
            "outputs": [tensor(d) for d in interp.get_output_details()], "params": params, "ops": dict(ops.most_common()),
            "metadata": meta or {}, "mediapipe_metadata": meta is not None,
            "delegate_coverage": {"xnnpack": {"partitions": partitions, "ops_not_delegated": left_out}}}


def _constant_elements(interp, ops: list[dict]) -> int:
    """Elements of tensors that ops read but no op writes and the graph does not take as input."""
    produced = {i for op in ops for i in op["outputs"]}
    inputs = {d["index"] for d in interp.get_input_details()}
    consts = {i for op in ops for i in op["inputs"] if i >= 0} - produced - inputs
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    return sum(int(np.prod(shapes[i])) for i in consts if i in shapes)


def _coreml(path: Path) -> dict:
    from edgeseg.runtime.coreml_runner import check_package, package_copy

    check_package(path)  # before coremltools: its import prints warnings and takes seconds
    import_coremltools("inspecting Core ML files")
    from edgeseg.export.coreml_convert import read_coreml_info

    with package_copy(path) as copy:
        info = {**read_coreml_info(copy), "path": str(path)}
    return {"format": "coreml", **info, "delegate_coverage": {"coreml": "compute-unit placement is decided on device; "
                                                              "ops listed under 'ops' are all standard ML Program ops"}}


# ---------------------------------------------------------------------------------------------
def print_inspection(info: dict) -> None:
    """Human-readable tables of ``inspect_file``'s result."""
    from edgeseg.ui import console, print_table

    console.print(f"[bold]{info['file']}[/] ({info['format']}, {info['bytes'] / 1024:.0f} KB, {info.get('params', 0):,} params"
                  + (f", {info['macs'] / 1e6:.0f}M MACs" if info.get("macs") else "") + ")")
    rows = [["input", t["name"], t.get("shape"), t.get("dtype"), t.get("quantization", "")] for t in info.get("inputs", [])]
    rows += [["output", t["name"], t.get("shape"), t.get("dtype"), t.get("quantization", "")] for t in info.get("outputs", [])]
    print_table("tensors", ["", "name", "shape", "dtype", "quantization"], rows)
    if info.get("format") == "executorch":
        places = executorch_op_places(info["delegate_coverage"])
        print_table("ops", ["op", "count", "runs in", "quantized"],
                    [[k, v, *places.get(k, ("", ""))] for k, v in info.get("ops", {}).items()])
    else:
        print_table("ops", ["op", "count"], [[k, v] for k, v in info.get("ops", {}).items()])
    if info.get("metadata"):
        print_table("metadata", ["key", "value"], [[k, str(v)[:100]] for k, v in info["metadata"].items()])
    if info.get("format") == "executorch":
        print_executorch_coverage(info["delegate_coverage"])
    else:
        console.print("delegate coverage: " + json.dumps(info.get("delegate_coverage", {})))
    if "manifest" in info:
        console.print("manifest: " + json.dumps(info["manifest"], default=str))
