"""Is an architecture's int8 graph pure integer? Measured on real int8 exports (layer 4).

``audit_architecture(name)`` builds a random-init instance of a registered architecture (its
default options, a small input: op structure does not depend on weights or size), exports it to
int8 TFLite and int8 ONNX with edgeseg's own exporters (the graphs ``edgeseg export`` writes),
and reads the files back:

- TFLite: which ops compute on float activations inside the graph, each QUANTIZE/DEQUANTIZE by
  role (``io``: reads the graph input or writes its output; ``requant``: int8 -> int8 rescale,
  which XNNPACK runs; ``float``: a hop between int8 and float inside the graph), and XNNPACK
  partitions. Pure integer: no float ops and no float hops.
- ONNX: a QDQ file wraps every op in DequantizeLinear/QuantizeLinear; what runs in integer is
  what a runtime fuses. ONNX Runtime's own CPU graph optimizer is run on the file and the ops it
  leaves between a DequantizeLinear and a QuantizeLinear are the float ones; the NNAPI and Core
  ML EP checks (``edgeseg inspect``'s delegate coverage) say which op types those EPs reject.
  Pure integer: no float ops and no op NNAPI rejects. (The Core ML EP check rejects
  QuantizeLinear/DequantizeLinear themselves, so every QDQ file fails it; it is recorded, not
  judged.)

``build_audit`` measures every registered architecture into the document that
``edgeseg models`` reads (``edgeseg.models.report.INT8_AUDIT``); ``benchmarks/int8_audit.py``
regenerates that committed file.
"""
from __future__ import annotations

import datetime
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.models.checkpoint import ModelInfo
from edgeseg.models.registry import check_input_size, get_spec, names

AUDIT_SCHEMA_VERSION = 1
AUDIT_SIDE = 64  # input height and width: fits every registered stride (16, 32), exports in seconds
CALIBRATION_IMAGES = 4
SEED = 0
METHOD = (f"random-init instance of each architecture (default options, 2 classes, {AUDIT_SIDE}x{AUDIT_SIDE} input, "
          f"torch seed {SEED}) exported to int8 TFLite and int8 ONNX by edgeseg's own exporters, calibrated on "
          f"{CALIBRATION_IMAGES} random images; TFLite: ops on float activations and QUANTIZE/DEQUANTIZE roles read "
          "from the file, XNNPACK partitions measured; ONNX: ops left float after ONNX Runtime's CPU graph "
          "optimizations fuse DequantizeLinear->op->QuantizeLinear groups into integer kernels, plus the NNAPI / "
          "Core ML EP checks of onnxruntime's usability checker. pure_integer: TFLite, no float op and no float<->int8 "
          "hop inside the graph; ONNX, the same on ONNX Runtime's CPU provider and no op NNAPI rejects (the Core ML "
          "EP check rejects QuantizeLinear/DequantizeLinear in every QDQ file: recorded, not judged)")


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple
    outputs: tuple


@dataclass(frozen=True)
class QuantGraph:
    """A quantized graph's node list (topological order) and its boundary, whatever the format."""

    nodes: tuple[Node, ...]
    inputs: frozenset  # graph input tensors
    outputs: frozenset  # graph output tensors
    float_inputs: frozenset  # the graph inputs that hold float values
    quantize: str  # the format's quantize op name (float -> integer, or integer -> integer)
    dequantize: str  # the format's dequantize op name (integer -> float)


def integer_check(graph: QuantGraph) -> dict:
    """Where ``graph`` computes in float: ``{pure_integer, float_ops: {op: count}, qdq: {io, requant, float}}``.

    Float values start at float graph inputs and dequantize outputs, and flow through every op
    but quantize. An op other than quantize/dequantize that reads a float value is a float op. A
    quantize/dequantize is ``io`` when it reads a graph input (or what an ``io`` op made of one: a
    uint8 input dequantized, then quantized to int8) or writes a graph output, ``requant`` when it
    is a quantize of an integer value, ``float`` otherwise (dequantizes of constant weights are not
    counted: their float op is). Pure integer = no float op and no ``float`` hop.
    """
    produced = {t for n in graph.nodes for t in n.outputs}
    float_values = set(graph.float_inputs)
    input_side = set(graph.inputs)
    float_ops: Counter = Counter()
    qdq = {"io": 0, "requant": 0, "float": 0}
    for node in graph.nodes:
        reads_float = any(t in float_values for t in node.inputs)
        if node.op in (graph.quantize, graph.dequantize):
            src = node.inputs[0]
            if src in input_side or any(t in graph.outputs for t in node.outputs):
                qdq["io"] += 1
                if node.op == graph.dequantize and src in graph.inputs:  # the input's float form, quantized next
                    input_side.update(node.outputs)
            elif node.op == graph.quantize and not reads_float:
                qdq["requant"] += 1
            elif src in produced:  # an activation, not a constant weight
                qdq["float"] += 1
            if node.op == graph.dequantize:
                float_values.update(node.outputs)
        elif reads_float:
            float_ops[node.op] += 1
            float_values.update(node.outputs)
    return {"pure_integer": not float_ops and qdq["float"] == 0, "float_ops": dict(sorted(float_ops.items())), "qdq": qdq}


def tflite_graph(model: bytes) -> QuantGraph:
    """The node list of a .tflite file as the TFLite kernels see it (no delegate applied)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=bytes(model),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    # private, but the only view of the node list in ai-edge-litert 2.3
    nodes = tuple(Node(op["op_name"], tuple(int(t) for t in op["inputs"] if t >= 0), tuple(int(t) for t in op["outputs"]))
                  for op in interp._get_ops_details())
    inputs = interp.get_input_details()
    return QuantGraph(nodes, frozenset(int(d["index"]) for d in inputs),
                      frozenset(int(d["index"]) for d in interp.get_output_details()),
                      frozenset(int(d["index"]) for d in inputs if np.issubdtype(d["dtype"], np.floating)),
                      "QUANTIZE", "DEQUANTIZE")


def onnx_cpu_graph(path: str | Path) -> QuantGraph:
    """A QDQ .onnx file as ONNX Runtime's CPU provider runs it: after its graph optimizations, which
    fuse the DequantizeLinear -> op -> QuantizeLinear groups it has integer kernels for."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        # EXTENDED: every QDQ fusion, and none of ALL's layout changes that tie the file to this CPU
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.intra_op_num_threads = 1
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    inits = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    return QuantGraph(tuple(Node(n.op_type, tuple(t for t in n.input if t), tuple(n.output)) for n in graph.node),
                      frozenset(v.name for v in inputs), frozenset(v.name for v in graph.output),
                      frozenset(v.name for v in inputs if v.type.tensor_type.elem_type in floats),
                      "QuantizeLinear", "DequantizeLinear")


def audit_tflite(path: str | Path) -> dict:
    """``integer_check`` of an int8 .tflite file plus its XNNPACK partitions and the ops XNNPACK left out."""
    from edgeseg.export.tflite_convert import xnnpack_partitions

    data = Path(path).read_bytes()
    partitions, left_out = xnnpack_partitions(data)
    return {**integer_check(tflite_graph(data)), "xnnpack_partitions": partitions, "ops_not_delegated": left_out}


def audit_onnx(path: str | Path) -> dict:
    """``integer_check`` of a QDQ .onnx file on ONNX Runtime's CPU provider, plus the op types the NNAPI and
    Core ML EP checks reject; pure integer also needs NNAPI to reject nothing."""
    from edgeseg.export.inspect import inspect_file

    coverage = inspect_file(path)["delegate_coverage"]
    rejects = {ep: sorted(op.split(":")[-1] for op in cov["unsupported_ops"]) for ep, cov in coverage.items()}
    cpu = integer_check(onnx_cpu_graph(path))
    return {**cpu, "pure_integer": cpu["pure_integer"] and not rejects["nnapi"],
            "nnapi_rejects": rejects["nnapi"], "coreml_rejects": rejects["coreml_mlprogram"]}


def audit_export(model, info: ModelInfo, calib: list) -> dict:
    """Export an eval-mode ``model`` (described by ``info``) to int8 TFLite and int8 ONNX with edgeseg's
    exporters, into a temporary folder, and audit both files: ``{tflite: audit_tflite, onnx: audit_onnx}``."""
    from edgeseg.export.base import ExportJob
    from edgeseg.export.pipeline import load_exporters

    exporters = load_exporters(("tflite", "onnx"), ("int8",))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, audit in (("tflite", audit_tflite), ("onnx", audit_onnx)):
            art = exporters[fmt].export(ExportJob(model, info, "int8", calib, Path(tmp), f"audit-{fmt}"))
            out[fmt] = audit(Path(tmp) / art.path)
    return out


def audit_architecture(name: str, side: int = AUDIT_SIDE) -> dict:
    """A random-init ``name`` (default options, seeded) at ``side`` x ``side``, calibrated on seeded random
    images, through ``audit_export``: ``{input_size, options, tflite, onnx, pure_integer}``."""
    import torch

    spec = get_spec(name)
    check_input_size(spec, side, side)
    info = ModelInfo(name="audit", arch=name, options=dict(spec.options), classes=("a", "b"), input_size=(side, side),
                     mean=spec.mean, std=spec.std)
    torch.manual_seed(SEED)
    model = info.build().eval()
    rng = np.random.default_rng(SEED)
    calib = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(CALIBRATION_IMAGES)]
    entry = {"input_size": [side, side], "options": info.to_dict()["options"], **audit_export(model, info, calib)}
    entry["pure_integer"] = entry["tflite"]["pure_integer"] and entry["onnx"]["pure_integer"]
    return entry


def build_audit(archs=None, on_entry=None) -> dict:
    """The int8 audit document for ``archs`` (default: every registered architecture), with the
    date, tool versions and method; ``on_entry(name, entry)`` is called after each is measured."""
    from edgeseg.export.pipeline import tool_versions

    entries = {}
    for name in archs or names():
        entries[name] = audit_architecture(name)
        if on_entry:
            on_entry(name, entries[name])
    return {"schema_version": AUDIT_SCHEMA_VERSION, "generated": datetime.date.today().isoformat(),
            "tools": tool_versions(), "method": METHOD, "architectures": entries}
