"""PyTorch segmenter -> .tflite for phones (litert-torch + ai-edge-quantizer + MediaPipe metadata).

Every file has fixed NHWC shapes, ``[1,H,W,3]`` in and ``[1,H,W,C]`` logits out, and
MediaPipe ImageSegmenter metadata (labels, normalization, softmax activation).

Input contract, per precision:
- fp32 / fp16: float32 input. With one mean/std for all channels, the input is the
  normalized image and MediaPipe normalizes with the metadata values. MediaPipe Tasks cannot
  apply per-channel values, so when they differ the normalization is built into the graph
  and the input is float pixels 0..255 (``expects == "pixels"``, metadata mean 0 / std 1).
- int8: uint8 input = raw pixels, float32 output. Normalization is in the graph, the input
  range pinned to 0..255 (scale 1) so the uint8 input is exact; or, with one mean/std for
  all channels and an integer mean (``folds_into_uint8_input``), no op at all: the uint8
  input's quantization (scale 1/std, zero point mean) is the normalization. Ops that
  XNNPACK cannot run in int8 stay float when measuring shows that keeps the graph whole.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

from edgeseg.compat import native_notices_dropped
from edgeseg.errors import ArtifactError, EdgesegError, require
from edgeseg.export.mediapipe_metadata import add_segmenter_metadata
from edgeseg.export.tflite_flatbuffer import io_details, prepend_input_normalization, uint8_input_float_output
from edgeseg.runtime.base import PIXEL_RANGE, folds_into_uint8_input, normalize_nhwc, normalized_range

TFLITE_PRECISIONS = ("fp32", "fp16", "int8")
# --calib-method name -> what ai-edge-quantizer does. Its only activation statistic is min/max per image,
# merged over the images by a moving average (smoothing 0.95); its other algorithms (MSE, OCTAV, GPTQ...)
# choose weight ranges, and activations fall back to min/max.
TFLITE_CALIB_METHODS = {
    "minmax": "ai-edge-quantizer min/max: per-image activation min/max, moving average (0.95) over the images",
}
_INT8_WEIGHTS = "weights int8 per-channel, activations int8"
# Ops inserted by the quantizer itself; keeping them "float" means nothing.
_QUANTIZER_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class TFLiteResult:
    """A converted model and what was measured about it."""

    data: bytes  # final .tflite bytes, with MediaPipe metadata attached
    input: dict  # name, shape [1,H,W,3], dtype, layout "NHWC", expects, quantization when integer
    output: dict  # name, shape [1,H,W,C], dtype, layout "NHWC", quantization when integer
    quantized: str  # what was quantized, in words
    xnnpack_partitions: int  # DELEGATE nodes XNNPACK created (1 = whole graph in one piece)
    ops_not_delegated: list  # op names XNNPACK left to the TFLite CPU kernels


def convert_tflite(model, *, height: int, width: int, mean: list[float], std: list[float], labels: list[str],
                   precision: str, calib_images, name: str, description: str,
                   calib_method: str = next(iter(TFLITE_CALIB_METHODS)), float_cache: dict | None = None) -> TFLiteResult:
    """Convert an eval-mode segmenter to a MediaPipe-ready .tflite at one precision.

    ``model`` maps normalized float32 NCHW ``[1,3,H,W]`` to logits ``[1,C,H,W]`` with
    ``C == len(labels) >= 2``; normalization is ``(pixel - mean) / std`` per channel, in 0-255
    units. ``calib_images`` (uint8 HxWx3 RGB arrays) and ``calib_method`` (a ``TFLITE_CALIB_METHODS``
    name) are used for int8 and ignored otherwise. The returned file has NHWC I/O, the input
    contract in the module docstring, metadata with ``name``/``description``/``labels``, and its
    XNNPACK partitioning measured. ``float_cache``: a dict kept across calls for the SAME model, so
    its float graph is converted once and each precision derived from it.
    Raises ``EdgesegError`` for bad arguments, ``MissingExtra`` if the tflite extra is absent.
    """
    if precision not in TFLITE_PRECISIONS:
        raise EdgesegError(f"TFLite precision '{precision}' is not supported; "
                           f"choose one of {', '.join(TFLITE_PRECISIONS)}")
    if calib_method not in TFLITE_CALIB_METHODS:
        raise EdgesegError(f"TFLite int8 calibration method {calib_method!r} is not offered; "
                           f"choose one of {', '.join(TFLITE_CALIB_METHODS)}")
    torch = require("torch", "tflite", "TFLite export")
    require("litert_torch", "tflite", "TFLite export")
    _check_model(torch, model, height, width, mean, std, labels)
    batches = _calibration_batches(calib_images, height, width) if precision == "int8" else None
    folded = precision == "int8" and folds_into_uint8_input(mean, std)
    in_graph = not folded and (precision == "int8" or not _uniform(mean, std))
    float_tflite = float_graph(torch, model, height, width, normalization=(mean, std) if in_graph else None,
                               cache=float_cache)
    if precision == "fp32":
        data, quantized = float_tflite, "nothing (float32 weights and activations)"
    elif precision == "fp16":
        data, quantized = _fp16_weights(float_tflite), "weights fp16 (float32 compute)"
    elif folded:  # the graph takes normalized input; the uint8 input's quantization does the normalization
        data, quantized = _full_int8(float_tflite, [normalize_nhwc(b, mean, std) for b in batches],
                                     input_range=normalized_range(mean, std))
        quantized += (f"; normalization folded into the uint8 input (scale 1/{float(std[0]):g}, "
                      f"zero point {float(mean[0]):g})")
    else:
        data, quantized = _full_int8(float_tflite, batches, normalized_range(mean, std))
    if precision == "int8":
        quantized += f"; {calib_method} calibration"
    raw_pixels = in_graph or precision == "int8"  # a uint8 input is always the raw pixel
    md_mean, md_std = ([0.0], [1.0]) if raw_pixels else (list(mean), list(std))
    data = add_segmenter_metadata(data, mean=md_mean, std=md_std, labels=list(labels), activation="softmax",
                                  name=name, description=description)
    partitions, not_delegated = xnnpack_partitions(data)
    expects = "pixels" if raw_pixels else "normalized"
    model_input, model_output = _io_contract(data, height, width, len(labels), expects=expects)
    return TFLiteResult(data=data, input=model_input, output=model_output, quantized=quantized,
                        xnnpack_partitions=partitions, ops_not_delegated=not_delegated)


def xnnpack_partitions(model: bytes) -> tuple[int, list[str]]:
    """Measure how XNNPACK splits ``model``: (number of delegated partitions, ops it left out).

    Loads the model in the ``ai_edge_litert`` Interpreter, which applies XNNPACK by default,
    and reads the node list. Delegated ops stay in that list next to the DELEGATE nodes that
    replaced them, so the ops that really run outside XNNPACK are found by walking back from
    the graph outputs through whatever produces each tensor at run time. The op list is
    sorted; ``(1, [])`` means the whole graph runs as one XNNPACK partition.
    """
    interpreter_mod = require("ai_edge_litert.interpreter", "tflite", "measuring XNNPACK delegation")
    interpreter = interpreter_mod.Interpreter(model_content=bytes(model), num_threads=1)
    with native_notices_dropped():
        interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()  # private, but the only view of the node list in 2.3.0
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    producer = {int(t): n for n in nodes if n["op_name"] != "DELEGATE" for t in n["outputs"]}
    producer.update({int(t): n for n in delegates for t in n["outputs"]})
    pending = [int(d["index"]) for d in interpreter.get_output_details()]
    visited, outside = set(), []
    while pending:
        node = producer.get(pending.pop())
        if node is None or node["index"] in visited:
            continue
        visited.add(node["index"])
        if node["op_name"] != "DELEGATE":
            outside.append(node["op_name"])
        pending.extend(int(t) for t in node["inputs"] if t >= 0)
    return len(delegates), sorted(outside)


def _check_model(torch, model, height, width, mean, std, labels) -> None:
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise EdgesegError(f"height and width must be positive integers, got {height}x{width}")
    if len(mean) != 3 or len(std) != 3 or any(float(s) == 0.0 for s in std):
        raise EdgesegError("mean and std need 3 values each (RGB, 0-255 units), std non-zero; "
                           f"got mean={list(mean)} std={list(std)}")
    if model.training:
        raise EdgesegError("the model is in training mode; call model.eval() before export")
    with torch.no_grad():
        out = model(torch.zeros(1, 3, height, width))
    if tuple(out.shape[:1]) + tuple(out.shape[2:]) != (1, height, width) or out.dim() != 4:
        raise EdgesegError(f"model must return logits [1,C,{height},{width}] for a [1,3,{height},{width}] input, "
                           f"got {list(out.shape)}")
    if out.shape[1] < 2 or out.shape[1] != len(labels):
        raise EdgesegError(f"model returns {out.shape[1]} classes but {len(labels)} labels were given (need >= 2)")


def _uniform(mean, std) -> bool:
    return len({float(v) for v in mean}) == 1 and len({float(v) for v in std}) == 1


def float_graph(torch, model, height: int, width: int, *, normalization: tuple | None = None,
                cache: dict | None = None) -> bytes:
    """``model``'s float .tflite with NHWC I/O. Its input is the normalized image, or with ``normalization``
    = (mean, std) float pixels 0..255 and the normalization as the graph's first op: a 1x1 depthwise conv
    (``prepend_input_normalization``), which XNNPACK runs as one fused kernel (measured on the default
    model, 1 thread: 0.33 vs 0.8 ms fp32, 0.51 vs 1.5 ms int8 for MUL + ADD). ``model`` is converted once
    per ``cache`` (a dict kept for the SAME model) and size; the pixel-input graph is derived from that."""
    if cache is not None and (height, width) in cache:
        normalized = cache[(height, width)]
    else:
        normalized = _to_nhwc_tflite(torch, model, height, width)
        if cache is not None:
            cache[(height, width)] = normalized
    return normalized if normalization is None else prepend_input_normalization(normalized, *normalization)


def _to_nhwc_tflite(torch, module, height: int, width: int) -> bytes:
    litert_torch = require("litert_torch", "tflite", "TFLite export")
    nhwc = litert_torch.to_channel_last_io(module, args=[0], outputs=[0]).eval()
    return bytes(litert_torch.convert(nhwc, (torch.zeros(1, height, width, 3),)).model_content())


def _fp16_weights(float_tflite: bytes) -> bytes:
    quantizer, qtyping = _aeq()
    qt = quantizer.Quantizer(float_tflite)
    qt.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING)
    return bytes(qt.quantize(enable_progress_report=False).quantized_model)


def _full_int8(float_tflite: bytes, batches: list, norm_range: tuple[float, float] | None = None,
               input_range: tuple[float, float] = PIXEL_RANGE) -> tuple[bytes, str]:
    """Full-integer model with uint8 pixel input and float32 output, plus its description.

    ``input_range``: what the graph input spans, 0..255 for a pixel-input graph, or the normalized range
    of every pixel value for a normalized-input one (``folds_into_uint8_input``); pinned, so that the
    uint8 input is the raw pixel either way. Quantizes once with every op in int8, measures the
    XNNPACK split, and if some quantizable ops were left out, quantizes again with those op types
    kept float; the version with fewer partitions wins.
    """
    qsvs = _calibrate(float_tflite, batches, norm_range, input_range)
    keep_float: tuple[str, ...] = ()
    candidate = _quantize_int8(float_tflite, qsvs, keep_float)
    partitions, outside = xnnpack_partitions(candidate)
    movable = _quantizable_op_types(outside)
    if partitions > 1 and movable:
        retry = _quantize_int8(float_tflite, qsvs, movable)
        if xnnpack_partitions(retry)[0] < partitions:
            candidate, keep_float = retry, movable
    described = _INT8_WEIGHTS + (f"; {', '.join(keep_float)} kept float" if keep_float else "")
    return uint8_input_float_output(_checked_pixel_input(candidate, input_range), float_output=True), described


def _calibrate(float_tflite: bytes, batches: list, norm_range: tuple[float, float] | None = None,
               input_range: tuple[float, float] = PIXEL_RANGE) -> dict:
    """Activation ranges from ``batches``, with the input range pinned to ``input_range`` and the in-graph
    normalization's output (``norm_range`` given) to what any pixel can normalize to."""
    qt = _int8_quantizer(float_tflite, keep_float=())
    signature, arg = _signature_input(float_tflite)
    with _preserve_all_tensors_warning_ignored():
        qsvs = qt.calibrate({signature: [{arg: b} for b in batches]}, num_threads=1)
    np = require("numpy", "tflite", "TFLite export")
    input_name = io_details(float_tflite)[0][0]["name"]

    def pin(name: str, low: float, high: float) -> None:
        qsvs[name] = {"min": np.full_like(qsvs[name]["min"], low), "max": np.full_like(qsvs[name]["max"], high)}

    # Pinning the range makes the input scale exactly 1 and the uint8 zero point 0 (or, for a
    # normalized input, 1/std and the mean): the uint8 input is then the raw pixel, whatever the
    # calibration images happened to span.
    pin(input_name, *input_range)
    # Likewise the normalization right after it: calibrated on its images, its range clipped
    # bright pixels (the default model: above 2.04 of a possible 2.64, i.e. blue > 220).
    if norm_range is not None:  # None: a graph without edgeseg's in-graph normalization
        pin(_normalization_output(float_tflite, input_name), *norm_range)
    return qsvs


def _normalization_output(float_tflite: bytes, input_name: str) -> str:
    """Name of the output tensor of the in-graph normalization (the op reading the pixel input)."""
    interpreter_mod = require("ai_edge_litert.interpreter", "tflite", "int8 calibration")
    interp = interpreter_mod.Interpreter(model_content=float_tflite)
    tensors = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    readers = [op for op in interp._get_ops_details() if input_name in (tensors.get(i) for i in op["inputs"])]
    if len(readers) != 1 or readers[0]["op_name"] != "DEPTHWISE_CONV_2D":
        raise ArtifactError(f"int8 TFLite: expected the pixel input to feed one DEPTHWISE_CONV_2D (the in-graph "
                            f"normalization), found {[op['op_name'] for op in readers]}")
    return tensors[readers[0]["outputs"][0]]


def _quantizable_op_types(op_names: list[str]) -> tuple[str, ...]:
    """The op types among ``op_names`` that the quantizer can be told to leave in float."""
    _, qtyping = _aeq()
    known = {op.value for op in qtyping.TFLOperationName}
    return tuple(sorted((set(op_names) & known) - _QUANTIZER_OPS))


def _quantize_int8(float_tflite: bytes, qsvs: dict, keep_float: tuple[str, ...]) -> bytes:
    qt = _int8_quantizer(float_tflite, keep_float)
    with _preserve_all_tensors_warning_ignored():
        return bytes(qt.quantize(qsvs, enable_progress_report=False).quantized_model)


@contextlib.contextmanager
def _preserve_all_tensors_warning_ignored():
    """Hide the one warning ai-edge-quantizer triggers on every calibrate/quantize call.

    It builds its own interpreters with ``experimental_preserve_all_tensors`` (it needs every
    intermediate tensor), and ai_edge_litert warns that this is meant for debugging.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*", category=UserWarning)
        yield


def _int8_quantizer(float_tflite: bytes, keep_float: tuple[str, ...]):
    quantizer, qtyping = _aeq()
    recipe = require("ai_edge_quantizer.recipe", "tflite", "int8 quantization")
    qt = quantizer.Quantizer(float_tflite)
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    for op_name in keep_float:
        qt.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName(op_name),
                                      algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
    return qt


def _checked_pixel_input(int8_tflite: bytes, input_range: tuple[float, float] = PIXEL_RANGE) -> bytes:
    """``int8_tflite`` if its int8 input dequantizes the int8 view of a raw pixel (pixel - 128) to ``input_range``."""
    low, high = input_range
    scale = (high - low) / 255
    zero_point = -128 - round(low / scale)
    quantization = io_details(int8_tflite)[0][0].get("quantization") or {}
    if quantization.get("zero_point") != zero_point or abs(quantization.get("scale", 0) - scale) > 1e-6 * scale:
        raise ArtifactError(f"int8 input quantization is {quantization}, expected scale {scale:g} / zero point "
                            f"{zero_point} (raw pixels)")
    return int8_tflite


def _signature_input(float_tflite: bytes) -> tuple[str, str]:
    interpreter_mod = require("ai_edge_litert.interpreter", "tflite", "int8 calibration")
    signatures = interpreter_mod.Interpreter(model_content=float_tflite).get_signature_list()
    key, io = next(iter(signatures.items()))
    return key, io["inputs"][0]


def _calibration_batches(calib_images, height: int, width: int) -> list:
    np = require("numpy", "tflite", "int8 calibration")
    if not calib_images:
        raise EdgesegError("int8 export needs calibration images (calib_images is empty)")
    batches = []
    for index, image in enumerate(calib_images):
        image = np.asarray(image)
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise EdgesegError(f"calibration image {index} is {image.dtype} {list(image.shape)}; "
                               f"expected uint8 [{height}, {width}, 3] RGB pixels")
        batches.append(image[None].astype(np.float32))
    return batches


def _io_contract(data: bytes, height: int, width: int, classes: int, *, expects: str) -> tuple[dict, dict]:
    inputs, outputs = io_details(data)
    model_input, model_output = inputs[0], outputs[0]
    if model_input["shape"] != [1, height, width, 3] or model_output["shape"] != [1, height, width, classes]:
        raise ArtifactError(f"converted model has input {model_input['shape']} and output {model_output['shape']}; "
                            f"expected NHWC [1,{height},{width},3] -> [1,{height},{width},{classes}]")
    return {**model_input, "layout": "NHWC", "expects": expects}, {**model_output, "layout": "NHWC"}


def _aeq():
    quantizer = require("ai_edge_quantizer.quantizer", "tflite", "TFLite quantization")
    qtyping = require("ai_edge_quantizer.qtyping", "tflite", "TFLite quantization")
    return quantizer, qtyping
