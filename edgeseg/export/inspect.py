"""``edgeseg inspect``: what an exported file is, measured from the file itself (layer 4).

Inputs/outputs, op histogram, parameter count, size, precision, embedded metadata, and
delegate coverage: XNNPACK partitions for TFLite, ONNX Runtime's NNAPI / Core ML EP
partitioning check for ONNX, the ML Program op list for Core ML, and for an ExecuTorch program the
delegate calls (backend id, the XNNPACK graph each one runs) against the operators it calls outside
any delegate.
"""
from __future__ import annotations

import json
import logging
import re
import struct
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from edgeseg.errors import ArtifactError, require
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
    kind = {".onnx": _onnx, ".tflite": _tflite, ".mlpackage": _coreml, ".pte": _executorch}.get(path.suffix)
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
    require("coremltools", "coreml", "inspecting Core ML files")
    from edgeseg.export.coreml_convert import read_coreml_info

    with package_copy(path) as copy:
        info = {**read_coreml_info(copy), "path": str(path)}
    return {"format": "coreml", **info, "delegate_coverage": {"coreml": "compute-unit placement is decided on device; "
                                                              "ops listed under 'ops' are all standard ML Program ops"}}


# ---------------------------------------------------------------------------------------------
# ExecuTorch (.pte): read with ExecuTorch's own deserializer; each XNNPACK payload with ExecuTorch's flatc

#: ExecuTorch ScalarType name -> the dtype name the other formats report
_ET_DTYPES = {"BYTE": "uint8", "CHAR": "int8", "SHORT": "int16", "INT": "int32", "LONG": "int64", "HALF": "float16",
              "FLOAT": "float32", "DOUBLE": "float64", "BOOL": "bool", "BFLOAT16": "bfloat16", "UINT16": "uint16",
              "UINT32": "uint32", "UINT64": "uint64"}
_XNNPACK = "XnnpackBackend"
#: XNNPACK payload flatbuffer identifier -> the schema (in executorch/backends/xnnpack/serialization/) that reads it
_XNN_SCHEMAS = {b"XN01": "schema.fbs", b"XN00": "runtime_schema.fbs"}


class _DropPytreeEnumNotice(logging.Filter):
    """torch logs a deprecation notice on stderr when torchao (imported by executorch.exir) registers an Enum;
    it would break the one-line error contract."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass and is now natively supported" not in str(record.getMessage())


def _executorch(path: Path) -> dict:
    require("executorch", "executorch", "inspecting ExecuTorch files")
    data = path.read_bytes()
    # A .pte starts with a flatbuffer whose file identifier (bytes 4-8) is "ET" and two digits.
    if len(data) < 8 or not re.fullmatch(rb"ET\d\d", data[4:8]):
        raise ArtifactError(f"{path}: not an ExecuTorch program (no ExecuTorch flatbuffer identifier at bytes 4-8; "
                            "empty, truncated or another kind of file?)")
    pytree_log = logging.getLogger("torch.utils._pytree")
    notice = _DropPytreeEnumNotice()
    pytree_log.addFilter(notice)
    try:
        from executorch.exir._serialize import _program as serialize
    finally:
        pytree_log.removeFilter(notice)
    deserialize = getattr(serialize, "deserialize_pte_binary", None) or serialize._deserialize_pte_binary
    try:
        pte = deserialize(data)
        program = pte.program
        plans = list(program.execution_plan)
        if not plans:
            raise ValueError("no methods")
        plan = next((p for p in plans if p.name == "forward"), plans[0])
        inputs = [_et_value(plan, i, f"input{n}") for n, i in enumerate(plan.inputs)]
        outputs = [_et_value(plan, i, f"output{n}") for n, i in enumerate(plan.outputs)]
        coverage, ops, params = _et_coverage(path, program, plans)
    except ArtifactError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, struct.error) as exc:  # a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ArtifactError(f"{path}: ExecuTorch cannot read it ({first}; truncated or damaged file?)") from None
    named = pte.named_data.pte_data if pte.named_data is not None else {}
    return {"format": "executorch",
            "program": {"version": program.version, "methods": [p.name for p in plans], "method": plan.name,
                        "planned_memory_bytes": int(sum(plan.non_const_buffer_sizes)),
                        "named_data_entries": len(named)},
            "inputs": inputs, "outputs": outputs, "params": params, "ops": ops,
            "metadata": {}, "delegate_coverage": coverage}


def _et_value(plan, index: int, name: str) -> dict:
    """A method input or output: a tensor's shape, dtype and dim order (a .pte stores no tensor names)."""
    from executorch.exir.schema import Tensor

    val = plan.values[index].val
    if not isinstance(val, Tensor):
        return {"name": name, "shape": [], "dtype": type(val).__name__.lower()}
    scalar = getattr(val.scalar_type, "name", str(val.scalar_type))
    return {"name": name, "shape": [int(d) for d in val.sizes], "dtype": _ET_DTYPES.get(scalar, scalar.lower()),
            "dim_order": [int(d) for d in val.dim_order]}


def _et_coverage(path: Path, program, plans) -> tuple[dict, dict, int]:
    """(delegate coverage, op histogram, constant elements) from the instructions of every method.

    A DelegateCall runs a backend's payload; a KernelCall runs one operator outside any delegate
    (ExecuTorch's portable or optimized kernels). Each XNNPACK payload's graph is decoded: its nodes
    are the ops XNNPACK runs for that call.
    """
    from executorch.exir.schema import DelegateCall, KernelCall, Tensor

    backends: dict[str, dict] = {}
    kernels: Counter = Counter()
    ops: Counter = Counter()
    graphs: dict[int, dict] = {}  # backend_delegate_data index -> decoded XNNPACK graph summary
    params = 0
    for plan in plans:
        for chain in plan.chains:
            for instr in chain.instructions:
                args = instr.instr_args
                if isinstance(args, KernelCall):
                    op = plan.operators[args.op_index]
                    name = op.name + (f".{op.overload}" if op.overload else "")
                    kernels[name] += 1
                    ops[name] += 1
                elif isinstance(args, DelegateCall):
                    delegate = plan.delegates[args.delegate_index]
                    entry = backends.setdefault(delegate.id, {"calls": 0})
                    entry["calls"] += 1
                    if delegate.id != _XNNPACK:
                        continue
                    index = delegate.processed.index
                    if index not in graphs:
                        graphs[index] = _xnnpack_graph(path, program.backend_delegate_data[index].data)
                        params += graphs[index]["constant_elements"]
                    graph = graphs[index]
                    entry["ops"] = entry.get("ops", 0) + graph["ops"]
                    entry["quantized_ops"] = entry.get("quantized_ops", 0) + graph["quantized_ops"]
                    for key in ("op_types", "quantized_op_types", "tensor_dtypes"):
                        entry[key] = dict(Counter(entry.get(key, {})) + Counter(graph[key]))
                    ops.update(graph["op_types"])
        # constants the method itself holds (outside delegates): tensors in the constant buffer
        params += sum(int(np.prod(v.val.sizes)) for v in plan.values
                      if isinstance(v.val, Tensor) and v.val.data_buffer_idx > 0)
    for entry in backends.values():
        for key in ("op_types", "quantized_op_types", "tensor_dtypes"):
            if key in entry:
                entry[key] = dict(Counter(entry[key]).most_common())
    coverage = {"backends": backends, "delegate_calls": sum(e["calls"] for e in backends.values()),
                "delegated_ops": sum(e.get("ops", 0) for e in backends.values()),
                "ops_not_delegated": dict(kernels.most_common()), "non_delegated_ops": sum(kernels.values())}
    return coverage, dict(ops.most_common()), params


def _xnnpack_graph(path: Path, payload: bytes) -> dict:
    """Node and tensor histogram of an XNNPACK delegate payload (XNNHeader + XNNGraph flatbuffer), decoded by
    the flatc that ExecuTorch ships, with the schema the XNNPACK backend serializes with."""
    import importlib.util

    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    flatbuffer = payload
    if payload[4:8] == b"XH00":  # XNNHeader: offset and size of the flatbuffer (little-endian u32 at 10 and 14)
        offset, size = int.from_bytes(payload[10:14], "little"), int.from_bytes(payload[14:18], "little")
        flatbuffer = payload[offset:offset + size]
    schema_name = _XNN_SCHEMAS.get(flatbuffer[4:8])
    if schema_name is None:
        raise ArtifactError(f"{path}: XNNPACK payload with unknown identifier {flatbuffer[4:8]!r}")
    root = Path(importlib.util.find_spec("executorch").submodule_search_locations[0])
    schema = root / "backends" / "xnnpack" / "serialization" / schema_name
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "graph.bin").write_bytes(flatbuffer)
        run = subprocess.run([_get_flatc_path(), "--json", "--defaults-json", "--strict-json", "--raw-binary",
                              "-o", tmp, str(schema), "--", str(Path(tmp) / "graph.bin")],
                             capture_output=True, text=True, timeout=120)
        out = Path(tmp) / "graph.json"
        if run.returncode != 0 or not out.is_file():
            said = (run.stderr or run.stdout).strip().splitlines()  # flatc prints its usage text, then the error
            last = said[-1].strip()[:160] if said else f"flatc exited with status {run.returncode}"
            raise ArtifactError(f"{path}: its XNNPACK payload cannot be decoded ({last}; damaged file?)")
        text = out.read_text()
    # flatc writes non-finite floats (a ReLU's output_max) bare: inf, -inf, nan
    text = re.sub(r"(?<=[\s:\[,])([+-]?)(inf|nan)(?=[\s,\]])",
                  lambda m: "NaN" if m.group(2) == "nan" else ("-" if m.group(1) == "-" else "") + "Infinity", text)
    graph = json.loads(text)
    values = {}
    for v in graph.get("xvalues", []):
        union = v.get("xvalue_union") or {}
        tensor = union.get("tensor_value", union)
        values[tensor.get("id_out")] = tensor
    dtype = lambda t: str(t.get("datatype", "")).removeprefix("xnn_datatype_")  # noqa: E731
    op_types: Counter = Counter()
    quantized: Counter = Counter()
    for node in graph.get("xnodes", []):
        kind, fields = node.get("xnode_union_type", "?"), node.get("xnode_union") or {}
        operands = [v for k, v in fields.items() if k.endswith("_id")]
        operands += [i for k, v in fields.items() if k.endswith("_ids") for i in v]
        op_types[kind] += 1
        if any(dtype(values.get(i, {})).startswith("q") for i in operands):
            quantized[kind] += 1
    constants = [t for t in values.values() if t.get("constant_buffer_idx")]
    return {"ops": sum(op_types.values()), "quantized_ops": sum(quantized.values()),
            "op_types": dict(op_types), "quantized_op_types": dict(quantized),
            "tensor_dtypes": dict(Counter(dtype(t) for t in values.values())),
            "constant_elements": sum(int(np.prod(t.get("dims") or [1])) for t in constants)}


def print_inspection(info: dict) -> None:
    """Human-readable tables of ``inspect_file``'s result."""
    from edgeseg.ui import console, print_table

    console.print(f"[bold]{info['file']}[/] ({info['format']}, {info['bytes'] / 1024:.0f} KB, {info.get('params', 0):,} params"
                  + (f", {info['macs'] / 1e6:.0f}M MACs" if info.get("macs") else "") + ")")
    rows = [["input", t["name"], t.get("shape"), t.get("dtype"), t.get("quantization", "")] for t in info.get("inputs", [])]
    rows += [["output", t["name"], t.get("shape"), t.get("dtype"), t.get("quantization", "")] for t in info.get("outputs", [])]
    print_table("tensors", ["", "name", "shape", "dtype", "quantization"], rows)
    if info.get("format") == "executorch":
        places = _executorch_op_places(info["delegate_coverage"])
        print_table("ops", ["op", "count", "runs in", "quantized"],
                    [[k, v, *places.get(k, ("", ""))] for k, v in info.get("ops", {}).items()])
    else:
        print_table("ops", ["op", "count"], [[k, v] for k, v in info.get("ops", {}).items()])
    if info.get("metadata"):
        print_table("metadata", ["key", "value"], [[k, str(v)[:100]] for k, v in info["metadata"].items()])
    if info.get("format") == "executorch":
        _print_executorch_coverage(info["delegate_coverage"])
    else:
        console.print("delegate coverage: " + json.dumps(info.get("delegate_coverage", {})))
    if "manifest" in info:
        console.print("manifest: " + json.dumps(info["manifest"], default=str))


def _executorch_op_places(cov: dict) -> dict:
    """op -> (where it runs, how many of its calls compute on quantized tensors) for the ops table."""
    places = {op: ("not delegated", "") for op in cov["ops_not_delegated"]}
    for backend, entry in cov["backends"].items():
        quantized = entry.get("quantized_op_types", {})
        places.update({op: (backend, quantized.get(op, 0)) for op in entry.get("op_types", {})})
    return places


def _print_executorch_coverage(cov: dict) -> None:
    """Where a .pte's ops run: each delegate backend's calls and ops, then the kernels called outside any."""
    from edgeseg.ui import console, print_table

    rows = [[backend, e["calls"], e.get("ops", "not decoded"), e.get("quantized_ops", ""),
             ", ".join(f"{k} {v}" for k, v in e.get("tensor_dtypes", {}).items())] for backend, e in cov["backends"].items()]
    rows.append(["not delegated (kernels)", cov["non_delegated_ops"], cov["non_delegated_ops"], "",
                 ", ".join(f"{k} {v}" for k, v in cov["ops_not_delegated"].items())])
    print_table("delegate coverage", ["runs in", "calls", "ops", "quantized ops", "tensor dtypes / operators"], rows)
    console.print(f"delegate coverage: {cov['delegated_ops']} ops in {cov['delegate_calls']} delegate call(s) "
                  f"({', '.join(cov['backends']) or 'none'}), {cov['non_delegated_ops']} not delegated")
