"""``edgeseg inspect`` of an ExecuTorch program (``.pte``), read from the file itself (layer 4).

The program is read with ExecuTorch's own deserializer: ``DelegateCall`` instructions of the
execution plan give the delegate calls (backend id), ``KernelCall`` instructions the operators run
outside any delegate; each XNNPACK payload is decoded with the ``flatc`` and schema ExecuTorch ships,
for the ops, quantized ops and tensor dtypes inside the delegate. These are private ExecuTorch
modules (pinned by the ``executorch`` extra below 1.6).
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from edgeseg.compat import install_log_filters
from edgeseg.errors import ArtifactError, require

# ExecuTorch (.pte): read with ExecuTorch's own deserializer; each XNNPACK payload with ExecuTorch's flatc

#: ExecuTorch ScalarType name -> the dtype name the other formats report
_ET_DTYPES = {"BYTE": "uint8", "CHAR": "int8", "SHORT": "int16", "INT": "int32", "LONG": "int64", "HALF": "float16",
              "FLOAT": "float32", "DOUBLE": "float64", "BOOL": "bool", "BFLOAT16": "bfloat16", "UINT16": "uint16",
              "UINT32": "uint32", "UINT64": "uint64"}
_XNNPACK = "XnnpackBackend"
#: XNNPACK payload flatbuffer identifier -> the schema (in executorch/backends/xnnpack/serialization/) that reads it
_XNN_SCHEMAS = {b"XN01": "schema.fbs", b"XN00": "runtime_schema.fbs"}


def describe_pte(path: Path) -> dict:
    """The format-specific part of ``inspect_file`` for a .pte (I/O, ops, delegate coverage, params)."""
    require("executorch", "executorch", "inspecting ExecuTorch files")
    data = path.read_bytes()
    # A .pte starts with a flatbuffer whose file identifier (bytes 4-8) is "ET" and two digits.
    if len(data) < 8 or not re.fullmatch(rb"ET\d\d", data[4:8]):
        raise ArtifactError(f"{path}: not an ExecuTorch program (no ExecuTorch flatbuffer identifier at bytes 4-8; "
                            "empty, truncated or another kind of file?)")
    install_log_filters()  # torch's notice about torchao's Enum, logged on this import, would break the one-line errors
    from executorch.exir._serialize import _program as serialize
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


def executorch_op_places(cov: dict) -> dict:
    """op -> (where it runs, how many of its calls compute on quantized tensors) for the ops table."""
    places = {op: ("not delegated", "") for op in cov["ops_not_delegated"]}
    for backend, entry in cov["backends"].items():
        quantized = entry.get("quantized_op_types", {})
        places.update({op: (backend, quantized.get(op, 0)) for op in entry.get("op_types", {})})
    return places


def print_executorch_coverage(cov: dict) -> None:
    """Where a .pte's ops run: each delegate backend's calls and ops, then the kernels called outside any."""
    from edgeseg.ui import console, print_table

    rows = [[backend, e["calls"], e.get("ops", "not decoded"), e.get("quantized_ops", ""),
             ", ".join(f"{k} {v}" for k, v in e.get("tensor_dtypes", {}).items())] for backend, e in cov["backends"].items()]
    rows.append(["not delegated (kernels)", cov["non_delegated_ops"], cov["non_delegated_ops"], "",
                 ", ".join(f"{k} {v}" for k, v in cov["ops_not_delegated"].items())])
    print_table("delegate coverage", ["runs in", "calls", "ops", "quantized ops", "tensor dtypes / operators"], rows)
    console.print(f"delegate coverage: {cov['delegated_ops']} ops in {cov['delegate_calls']} delegate call(s) "
                  f"({', '.join(cov['backends']) or 'none'}), {cov['non_delegated_ops']} not delegated")
