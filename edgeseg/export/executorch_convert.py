"""Convert a segmenter to an ExecuTorch program (``.pte``) lowered to the XNNPACK backend.

fp32: ``torch.export`` -> ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`` ->
``to_executorch``. int8: the PT2E flow first (``prepare_pt2e`` with XNNPACK's quantizer, static
per-channel symmetric weights and per-tensor activations observed on the calibration images,
``convert_pt2e``), then the same lowering: XNNPACK runs the quantized convolutions.

The program's input ``image`` is float32 NCHW normalized ((pixel - mean) / std), like the ONNX file;
its output ``logits`` float32 NCHW. The int8 input range is pinned to the range of every possible
pixel (``normalized_range``), as for the other int8 files, so no photo's pixels clip. With one integer
mean and one std for all channels (``folds_into_uint8_input``, the packaged default's) the int8
program takes the int8 its first quantize op made instead (``expects: "pixels_int8"``): exactly
``pixel - 128``, the uint8 pixels with their top bit flipped, so the caller normalizes nothing.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from edgeseg.errors import EdgesegError, require
from edgeseg.runtime.base import PIXELS_INT8, folds_into_uint8_input, normalize_nhwc, normalized_range

EXECUTORCH_PRECISIONS = ("fp32", "int8")
#: --calib-method name -> the PT2E observer its activations use
EXECUTORCH_CALIB_METHODS = {"minmax": "MinMaxObserver"}
BACKEND = "XnnpackBackend"


@dataclass(frozen=True)
class ExecuTorchResult:
    """What convert_executorch produced: the program's bytes, its I/O contract and how much XNNPACK runs."""

    data: bytes
    input: dict
    output: dict
    quantized: str
    delegation: dict  # {"backend", "delegated_ops", "other_ops", "not_delegated": {op: count}}


def convert_executorch(model, *, height: int, width: int, precision: str, mean, std,
                       calib_images: list[np.ndarray] | None = None, calib_method: str = "minmax") -> ExecuTorchResult:
    """The ``.pte`` of ``model`` (eval mode, normalized [1,3,H,W] -> logits [1,C,H,W]) at ``precision``.

    int8 needs ``calib_images`` (uint8 HWC at the model's size). EdgesegError for an unknown
    precision or calibration method, or no calibration images for int8.
    """
    if precision not in EXECUTORCH_PRECISIONS:
        raise EdgesegError(f"ExecuTorch precision {precision!r} is not supported; choose one of "
                           f"{', '.join(EXECUTORCH_PRECISIONS)}")
    if precision == "int8" and calib_method not in EXECUTORCH_CALIB_METHODS:
        raise EdgesegError(f"ExecuTorch int8 calibration offers only {', '.join(EXECUTORCH_CALIB_METHODS)}, "
                           f"not {calib_method}")
    if precision == "int8" and not calib_images:
        raise EdgesegError("ExecuTorch int8 export needs calibration images")
    require("executorch", "executorch", "ExecuTorch export")
    example = (torch.zeros(1, 3, height, width),)
    model_input = {"name": "image", "shape": [1, 3, height, width], "dtype": "float32", "layout": "NCHW",
                   "expects": "normalized"}
    quantized = "none"
    with torch.no_grad():
        classes = int(model(*example).shape[1])
        graph = _quantized(model, example, calib_images, mean, std) if precision == "int8" else model
        exported = torch.export.export(graph, example)
        if precision == "int8":
            quantized = "int8 static: weights per-channel symmetric, activations per-tensor (XNNPACK quantizer, PT2E)"
            if folds_into_uint8_input(mean, std):
                model_input.update(dtype="int8", quantization=_int8_input(exported, mean, std), expects=PIXELS_INT8)
                quantized += "; int8 input: pixel - 128 (normalization folded into its quantization)"
        program, delegation = _lowered(exported)
    return ExecuTorchResult(
        data=bytes(program.buffer),
        input=model_input,
        output={"name": "logits", "shape": [1, classes, height, width], "dtype": "float32", "layout": "NCHW"},
        quantized=quantized,
        delegation=delegation,
    )


def _int8_input(exported, mean, std) -> dict:
    """Make ``exported`` (quantized, its input range pinned) take the int8 its input's quantize op would
    make, and return that quantization. With one integer mean and std for all channels the pinned range
    gives scale ``1 / std`` and zero point ``mean - 128``: the int8 is exactly ``pixel - 128`` (the same
    logits bit for bit as the float input; a quarter of its bytes; 0.96x the float-input program's time on
    the default model, ``ExecuTorchRunner.run`` with its input preparation, 1 thread, 400 interleaved runs)."""
    from executorch.exir.passes.quantize_io_pass import quantize_input

    scale, zero_point, _, _, dtype = quantize_input(exported, 0)
    scale, zero_point = float(scale), int(zero_point)
    if dtype != torch.int8 or zero_point != round(float(mean[0])) - 128 or abs(scale * float(std[0]) - 1) > 1e-5:
        raise EdgesegError(f"ExecuTorch int8 input quantization (scale {scale:g}, zero point {zero_point}, {dtype}) "
                           f"is not the pixel - 128 that mean {mean[0]:g} / std {std[0]:g} give; please report this")
    return {"scale": scale, "zero_point": zero_point}


def _quantized(model, example, calib_images, mean, std):
    """``model`` through PT2E: observed on the calibration images (input range pinned), then converted."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True)
    act = dataclasses.replace(config.input_activation,
                              observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    prepared = prepare_pt2e(torch.export.export(model, example).module(), XNNPACKQuantizer().set_global(config))
    for image in calib_images:
        x = normalize_nhwc(image[None], mean, std).transpose(0, 3, 1, 2)
        prepared(torch.from_numpy(np.ascontiguousarray(x)))
    _pin_input_range(prepared, normalized_range(mean, std))
    return convert_pt2e(prepared)


def _pin_input_range(prepared, span: tuple[float, float]) -> None:
    """Widen the input's observed range to ``span`` (every pixel value of every channel)."""
    placeholder = next(n for n in prepared.graph.nodes if n.op == "placeholder")
    for user in placeholder.users:
        observer = getattr(prepared, str(user.target), None) if user.op == "call_module" else None
        if observer is not None and hasattr(observer, "min_val"):
            observer.min_val = torch.minimum(observer.min_val, torch.tensor(span[0]))
            observer.max_val = torch.maximum(observer.max_val, torch.tensor(span[1]))


def _lowered(exported):
    """(ExecuTorch program, delegation summary) of an exported program lowered to XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    summary = delegation_summary(edge.exported_program().graph_module)  # before to_executorch rewrites the graph
    return edge.to_executorch(), summary


#: graph nodes that plan memory rather than run an operator
_MEMORY_PLANNING = {"alloc", "getitem"}


def delegation_summary(graph_module) -> dict:
    """How much of a lowered graph XNNPACK runs: its delegate calls (``partitions``), the ops inside them,
    and the operators left to ExecuTorch's portable kernels, with counts (memory planning not counted)."""
    delegated = partitions = 0
    others: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name == "executorch_call_delegate":
            partitions += 1
            sub = getattr(graph_module, str(node.args[0].target))
            delegated += sum(1 for n in sub.original_module.graph.nodes if n.op == "call_function")
        elif name not in _MEMORY_PLANNING:
            others[name] += 1
    return {"backend": BACKEND, "partitions": partitions, "delegated_ops": delegated, "other_ops": sum(others.values()),
            "not_delegated": dict(sorted(others.items()))}
