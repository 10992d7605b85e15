"""A numpy reference interpreter for the Core ML ML Programs that edgeseg exports.

Core ML cannot run on Linux, so CI checks an exported ``.mlpackage`` by evaluating its ML
Program op by op with numpy. Every value is rounded to the dtype the program declares for it
(fp16 where the program says fp16) and computed in fp32, which tracks Core ML on CPU closely
but is not bit-exact to the GPU or Neural Engine.

What Core ML does before the program runs is reproduced from the spec: an RGB or BGR image
input reaches the program as a float32 [1, 3, H, W] tensor of raw 0-255 pixel values in that
channel order. For ML Programs the spec's ImageType carries no scale or bias: the converter
writes them into the program as a ``mul`` and an ``add`` on the input, which this interpreter
evaluates like any other op (``image_scale_bias`` reads them back).

Constants, including the weight decompression ops (``constexpr_*``), are folded once at load.
An op type missing from ``OPS`` makes ``load`` raise ArtifactError naming it.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgeseg.compat import import_coremltools
from edgeseg.errors import ArtifactError, EdgesegError, require

WEIGHTS_SUBDIR = "Data/com.apple.CoreML/weights"

Args = Mapping[str, Any]


# ----------------------------------------------------------------------------- op helpers


def _per_channel(v, ndim: int, axis: int = 1) -> np.ndarray:
    """A scalar stays scalar; a vector is shaped to broadcast along ``axis`` of an ndim tensor."""
    v = np.asarray(v, dtype=np.float32)
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _spatial_pads(sizes, kernel, strides, dilations, pad_type: str, pad) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis following the MIL conv/pool ``pad_type`` rules."""
    n = len(sizes)
    if pad_type == "custom":
        flat = [int(p) for p in np.asarray(pad).ravel()]
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(n)]
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type not in ("same", "same_lower"):
        raise ArtifactError(f"pad_type {pad_type!r} is not known to the Core ML reference")
    pads = []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if pad_type == "same" else (big, small))
    return pads


def _windows(xp: np.ndarray, kernel, strides, dilations, out_sizes):
    """Yield (tap, view) for every kernel tap: ``view`` is the strided slice that tap reads."""
    for tap in itertools.product(*(range(int(k)) for k in kernel)):
        index = tuple(
            slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dilations, strides, out_sizes)
        )
        yield tap, xp[(Ellipsis, *index)]


def _window_geometry(a: Args, x: np.ndarray, kernel):
    """Strides, dilations, pads and output sizes of a conv or pool over ``x``'s spatial axes."""
    n = x.ndim - 2
    strides = [int(s) for s in a.get("strides", [1] * n)]
    dilations = [int(d) for d in a.get("dilations", [1] * n)]
    pads = _spatial_pads(x.shape[2:], kernel, strides, dilations, a.get("pad_type", "valid"), a.get("pad"))
    out = [
        (size + lo + hi - (k - 1) * d - 1) // s + 1
        for size, (lo, hi), k, s, d in zip(x.shape[2:], pads, kernel, strides, dilations)
    ]
    return strides, dilations, pads, out


def _pad_spatial(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    return np.pad(x, [(0, 0)] * (x.ndim - len(pads)) + list(pads), constant_values=value)


def _conv(a: Args) -> np.ndarray:
    x, w = a["x"], a["weight"]
    groups = int(a.get("groups", 1))
    n, cin = x.shape[:2]
    cout, cg = w.shape[:2]
    kernel = w.shape[2:]
    strides, dilations, pads, out = _window_geometry(a, x, kernel)
    xp = _pad_spatial(x, pads)
    wg = w.reshape(groups, cout // groups, cg, *kernel)
    acc = np.zeros((n, groups, cout // groups, math.prod(out)), dtype=np.float32)
    for tap, view in _windows(xp, kernel, strides, dilations, out):
        cols = view.reshape(n, groups, cg, -1)
        wt = wg[(Ellipsis, *tap)]  # [groups, cout/groups, cin/groups]
        if cg == 1:  # depthwise: the matmul is a broadcast product
            acc += wt * cols
            continue
        # Plain 2-D matmuls: numpy's stacked matmul is many times slower under multithreaded BLAS.
        for b, g in itertools.product(range(n), range(groups)):
            acc[b, g] += wt[g] @ cols[b, g]
    y = acc.reshape(n, cout, *out)
    if a.get("bias") is not None:
        y += _per_channel(a["bias"], y.ndim)
    return y


def _avg_pool(a: Args) -> np.ndarray:
    x = a["x"]
    if a.get("ceil_mode", False):
        raise ArtifactError("avg_pool with ceil_mode=True is not supported by the Core ML reference")
    kernel = [int(k) for k in a["kernel_sizes"]]
    strides, dilations, pads, out = _window_geometry(a, x, kernel)
    total = sum(view for _, view in _windows(_pad_spatial(x, pads), kernel, strides, dilations, out))
    if a.get("exclude_padding_from_average", False):
        ones = _pad_spatial(np.ones(x.shape[2:], dtype=np.float32), pads)
        count = sum(view for _, view in _windows(ones, kernel, strides, dilations, out))
    else:
        count = math.prod(kernel)
    return total / count


# Source coordinate of each output sample along one axis, per MIL sampling mode; the result is
# clamped to [0, n_in - 1] by the caller.
_GRIDS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "STRICT_ALIGN_CORNERS": lambda i, n_in, n_out: i * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0),
    "ALIGN_CORNERS": lambda i, n_in, n_out: i * (n_in - 1) / (n_out - 1) if n_out > 1 else i + (n_in - 1) / 2,
    "DEFAULT": lambda i, n_in, n_out: i * (n_in / n_out),
    "OFFSET_CORNERS": lambda i, n_in, n_out: (i + 0.5) * (max(1, n_in - 1) / n_out),
    "UNALIGN_CORNERS": lambda i, n_in, n_out: (i + 0.5) * (n_in / n_out) - 0.5,
}


def _interp_axis(x: np.ndarray, axis: int, n_out: int, mode: str) -> np.ndarray:
    n_in = x.shape[axis]
    src = np.clip(_GRIDS[mode](np.arange(n_out, dtype=np.float64), n_in, n_out), 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    frac = (src - lo).astype(np.float32).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _bilinear(x: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    return _interp_axis(_interp_axis(x, -2, height, mode), -1, width, mode)


def _resize_bilinear(a: Args) -> np.ndarray:
    mode = str(a.get("sampling_mode", "DEFAULT"))
    if mode not in _GRIDS:
        raise ArtifactError(f"resize_bilinear sampling_mode {mode!r} is not known to the Core ML reference")
    return _bilinear(a["x"], int(a.get("target_size_height", 1)), int(a.get("target_size_width", 1)), mode)


def _upsample_bilinear(a: Args) -> np.ndarray:
    x = a["x"]
    align = bool(a.get("align_corners", True))
    half_pixel = bool(a.get("half_pixel_centers", not align))
    modes = {(True, False): "STRICT_ALIGN_CORNERS", (False, True): "UNALIGN_CORNERS", (False, False): "DEFAULT"}
    if (align, half_pixel) not in modes:
        raise ArtifactError("upsample_bilinear with align_corners and half_pixel_centers both true is invalid")
    # The sampling grid follows the rounded output size, not the scale factor itself.
    height = math.floor(x.shape[-2] * float(a.get("scale_factor_height", 1)))
    width = math.floor(x.shape[-1] * float(a.get("scale_factor_width", 1)))
    return _bilinear(x, height, width, modes[(align, half_pixel)])


def _concat(a: Args) -> np.ndarray:
    values, axis = a["values"], int(a["axis"])
    if not a.get("interleave", False):
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis % values[0].ndim + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def _softmax(a: Args) -> np.ndarray:
    axis = int(a.get("axis", -1))
    e = np.exp(a["x"] - a["x"].max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reduce_mean(a: Args) -> np.ndarray:
    axes = a.get("axes")
    axes = None if axes is None else tuple(int(i) for i in np.ravel(axes))
    return np.mean(a["x"], axis=axes, keepdims=bool(a.get("keep_dims", False)))


def _reshape(a: Args) -> np.ndarray:
    shape = [int(s) for s in np.ravel(a["shape"])]
    if 0 in shape:
        raise ArtifactError("reshape with a 0 in its shape is not supported by the Core ML reference")
    return np.reshape(a["x"], shape)


def _batch_norm(a: Args) -> np.ndarray:
    x = a["x"]
    scale = _per_channel(a.get("gamma", 1.0), x.ndim) / np.sqrt(
        _per_channel(a["variance"], x.ndim) + np.float32(a.get("epsilon", 1e-5))
    )
    return (x - _per_channel(a["mean"], x.ndim)) * scale + _per_channel(a.get("beta", 0.0), x.ndim)


def _numpy_dtype(name_or_builtin) -> np.dtype:
    types = require("coremltools.converters.mil.mil.types", "coreml", "reading a Core ML program")
    builtin = types.string_to_builtin(name_or_builtin) if isinstance(name_or_builtin, str) else name_or_builtin
    return np.dtype(types.nptype_from_builtin(builtin))


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Indices packed LSB-first into bytes (iOS16 ``constexpr_lut_to_dense``)."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[: nbits * count]
    return (bits.reshape(count, nbits).astype(np.int64) << np.arange(nbits)).sum(axis=1)


def _block_index(data_shape, param_shape) -> tuple[np.ndarray, ...]:
    """Open-grid index mapping every element of ``data`` to its block's entry in ``param``.

    Block size along each axis is ``data_shape[i] // param_shape[i]`` (iOS18 blockwise ops).
    """
    rank = len(data_shape)
    grids = []
    for axis, (n, m) in enumerate(zip(data_shape, param_shape)):
        if m == 0 or n % m:
            raise ArtifactError(
                f"block parameter shape {tuple(param_shape)} does not divide data shape {tuple(data_shape)}"
            )
        shape = [1] * rank
        shape[axis] = n
        grids.append((np.arange(n) // (n // m)).reshape(shape))
    return tuple(grids)


def _lut_to_dense(a: Args) -> np.ndarray:
    lut, indices = np.asarray(a["lut"]), np.asarray(a["indices"])
    if "shape" in a:  # iOS16 form: a flat LUT and bit-packed indices
        shape = [int(s) for s in a["shape"]]
        nbits = int(round(math.log2(lut.size)))
        return lut[_unpack_bits(indices, nbits, math.prod(shape))].reshape(shape)
    # iOS18 form: lut [*blocks, palettes, vector_size] indexed per block
    values = lut[(*_block_index(indices.shape, lut.shape[: indices.ndim]), indices.astype(np.int64))]
    vector = lut.shape[-1]
    if vector == 1:
        return values[..., 0]
    axis = int(a["vector_axis"]) % indices.ndim
    out_shape = list(indices.shape)
    out_shape[axis] *= vector
    return np.moveaxis(values, -1, axis + 1).reshape(out_shape)


def _affine_dequantize(a: Args) -> np.ndarray:
    q = np.asarray(a["quantized_data"], dtype=np.float32)
    axis = int(a["axis"]) % q.ndim
    return (q - _per_channel(a["zero_point"], q.ndim, axis)) * _per_channel(a["scale"], q.ndim, axis)


def _blockwise_shift_scale(a: Args) -> np.ndarray:
    data = np.asarray(a["data"], dtype=np.float32)
    index = _block_index(data.shape, np.shape(a["scale"]))
    offset = np.asarray(a["offset"], dtype=np.float32)[index] if a.get("offset") is not None else 0.0
    return np.asarray(a["scale"], dtype=np.float32)[index] * (data - offset)


def _binary(f) -> Callable[[Args], np.ndarray]:
    return lambda a: f(a["x"], a["y"])


def _unary(f) -> Callable[[Args], np.ndarray]:
    return lambda a: f(a["x"])


OPS: dict[str, Callable[[Args], Any]] = {
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "sigmoid": _unary(lambda x: np.exp(-np.logaddexp(0, -x))),
    "clip": lambda a: np.minimum(np.maximum(a["x"], a["alpha"]), a["beta"]),
    "thresholded_relu": lambda a: np.where(a["x"] > a.get("alpha", 1.0), a["x"], 0),
    "sigmoid_hard": lambda a: np.clip(a.get("alpha", 0.2) * a["x"] + a.get("beta", 0.5), 0, 1),
    "softmax": _softmax,
    "conv": _conv,
    "avg_pool": _avg_pool,
    "batch_norm": _batch_norm,
    "reduce_mean": _reduce_mean,
    "upsample_bilinear": _upsample_bilinear,
    "resize_bilinear": _resize_bilinear,
    "concat": _concat,
    "transpose": lambda a: np.transpose(a["x"], [int(p) for p in a["perm"]]),
    "reshape": _reshape,
    "cast": lambda a: np.asarray(a["x"]).astype(_numpy_dtype(a["dtype"])),
    "identity": _unary(lambda x: x),
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_cast": lambda a: np.asarray(a["source_val"]).astype(_numpy_dtype(a["output_dtype"])),
}
"""MIL op type -> function(args) evaluated in fp32; ``args`` maps the op's input names to values."""


# ----------------------------------------------------------------------------- program loading


def load_program(path: str | Path):
    """Return ``(spec, main_function)`` of the ML Program package at ``path``, weights included.

    Raises ArtifactError when the path is not a readable ML Program package.
    """
    ct = import_coremltools("reading a Core ML package")
    milproto = require("coremltools.converters.mil.frontend.milproto.load", "coreml", "reading a Core ML package")
    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise ArtifactError(f"{path}: not a Core ML .mlpackage (no Manifest.json)")
    try:
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as exc:  # coremltools raises assorted types for unreadable packages
        raise ArtifactError(f"{path}: cannot read the Core ML spec: {exc}") from exc
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{path}: not an ML Program (model type {spec.WhichOneof('Type')!r})")
    try:
        program = milproto.load(spec, spec.specificationVersion, file_weights_dir=str(path / WEIGHTS_SUBDIR))
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot load the ML Program: {type(exc).__name__}: {exc}") from exc
    if "main" not in program.functions:
        raise ArtifactError(f"{path}: the ML Program has no 'main' function")
    return spec, program.functions["main"]


def image_scale_bias(function, input_name: str) -> dict:
    """The ImageType scale and per-channel bias the converter wrote as ``mul``/``add`` on the input.

    Returns ``{"scale": float, "bias": [3 floats in the input's channel order]}``; scale 1 and
    bias 0 when the program has no such op.
    """
    found = {"mul": 1.0, "add": 0.0}
    var = function.inputs[input_name]
    for op_type in found:
        consumers = [op for op in var.child_ops if op.op_type == op_type and op.x is var and op.y.val is not None]
        if len(consumers) == 1:
            found[op_type] = np.asarray(consumers[0].y.val, dtype=np.float64).ravel()
            var = consumers[0].outputs[0]
    return {"scale": float(np.ravel(found["mul"])[0]), "bias": np.broadcast_to(found["add"], (3,)).tolist()}


# The BLAS limit is process-wide: one prediction at a time holds it, since two overlapping ones would
# restore it out of order and leave BLAS at one thread for the rest of the process (threadpoolctl
# before 3.8; 3.8 lets only one thread change OpenBLAS's limit).
_BLAS_LOCK = threading.Lock()


def _single_threaded_blas():
    """Limit BLAS to one thread while predicting, when threadpoolctl is installed.

    The matmuls here are small; on a shared 2-core machine multithreaded OpenBLAS made a
    256x256 MobileNetV3 run about 10x slower than one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _compute_form(value):
    """fp16 values are held as fp32 (exactly) so every op computes in fp32."""
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def _stored(value: np.ndarray, dtype) -> np.ndarray:
    """``value`` as the program stores it (its declared ``dtype``), in compute form: an fp16 output is
    rounded to fp16 (round to nearest even, as numpy's cast) and held as fp32.

    fp32 -> fp16 -> fp32 goes through torch: the same values as numpy's casts, ~15x faster (vectorized
    F16C), which is most of an fp16 program's run time here."""
    if np.dtype(dtype) == np.float16 and value.dtype == np.float32:
        import torch

        return torch.from_numpy(np.ascontiguousarray(value)).half().float().numpy()
    return _compute_form(value.astype(dtype, copy=False))


def _static_shape(var) -> tuple[int, ...] | None:
    shape = tuple(var.shape)
    return shape if all(isinstance(s, (int, np.integer)) for s in shape) else None


@dataclass(frozen=True)
class _Step:
    """One runtime op: its function, input references and declared outputs."""

    op_type: str
    fn: Callable[[Args], Any]
    inputs: dict  # input name -> var name, or tuple of var names for list inputs
    outputs: tuple  # (var name, numpy dtype, static shape or None) per output

    def run(self, env: dict) -> None:
        args = {k: ([env[n] for n in v] if isinstance(v, tuple) else env[v]) for k, v in self.inputs.items()}
        result = self.fn(args)
        results = result if len(self.outputs) > 1 else (result,)
        for value, (name, dtype, shape) in zip(results, self.outputs):
            value = _stored(np.asarray(value), dtype)
            if shape is not None and value.shape != shape:
                raise ArtifactError(
                    f"{self.op_type} -> '{name}' produced shape {value.shape} but the program declares {shape}"
                )
            env[name] = value


def _make_step(op) -> _Step:
    if op.op_type not in OPS:
        raise ArtifactError(
            f"Core ML op '{op.op_type}' (output '{op.outputs[0].name}') is not supported by the numpy reference; "
            f"supported: const, {', '.join(sorted(OPS))}"
        )
    inputs = {
        key: tuple(v.name for v in var) if isinstance(var, (list, tuple)) else var.name
        for key, var in op.inputs.items()
    }
    outputs = tuple((v.name, _numpy_dtype(v.dtype), _static_shape(v)) for v in op.outputs)
    return _Step(op.op_type, OPS[op.op_type], inputs, outputs)


def _references(step: _Step):
    for v in step.inputs.values():
        yield from (v if isinstance(v, tuple) else (v,))


class CoreMLReferenceProgram:
    """An exported segmenter's ML Program, evaluated with numpy (see the module docstring)."""

    def __init__(self, *, path: Path, input_name: str, output_name: str, input_shape, channel_order, consts, steps):
        self.path = path
        self.input_name = input_name
        self.output_name = output_name
        self.input_shape = tuple(input_shape)  # [1, 3, H, W] as the program declares it
        self._channel_order = channel_order
        self._consts = consts
        self._steps = steps

    @classmethod
    def load(cls, path: str | Path) -> "CoreMLReferenceProgram":
        """Read the package, fold constants and check every op is supported.

        Raises ArtifactError for a package that is not an image-input ML Program with one
        output, or that uses an op this interpreter does not know (the message names it).
        """
        path = Path(path)
        spec, function = load_program(path)
        inputs, outputs = spec.description.input, spec.description.output
        if len(inputs) != 1 or inputs[0].type.WhichOneof("Type") != "imageType":
            raise ArtifactError(f"{path}: expected exactly one image input, found {[i.name for i in inputs]}")
        if len(outputs) != 1:
            raise ArtifactError(f"{path}: expected exactly one output, found {[o.name for o in outputs]}")
        fts = require("coremltools.proto.FeatureTypes_pb2", "coreml", "reading a Core ML package")
        color = fts.ImageFeatureType.ColorSpace.Name(inputs[0].type.imageType.colorSpace)
        orders = {"RGB": [0, 1, 2], "BGR": [2, 1, 0]}
        if color not in orders:
            raise ArtifactError(f"{path}: image color space {color} is not supported (RGB or BGR)")
        input_var = function.inputs[inputs[0].name]

        consts: dict[str, Any] = {}
        steps: list[_Step] = []
        for op in function.operations:
            if op.op_type == "const":
                consts[op.outputs[0].name] = _compute_form(op.outputs[0].val)
                continue
            step = _make_step(op)
            if all(ref in consts for ref in _references(step)):
                step.run(consts)  # constant folding, including weight decompression
            else:
                steps.append(step)
        output_name = function.outputs[0].name
        return cls(
            path=path,
            input_name=input_var.name,
            output_name=output_name,
            input_shape=_static_shape(input_var),
            channel_order=orders[color],
            consts=consts,
            steps=steps,
        )

    def predict(self, image_uint8_nhwc: np.ndarray) -> np.ndarray:
        """Logits float32 [N, C, H, W] for uint8 RGB images [N, H, W, 3], one image at a time.

        Raises EdgesegError when the images are not uint8 RGB at the program's input size.
        """
        images = np.asarray(image_uint8_nhwc)
        _, channels, height, width = self.input_shape
        expected = (height, width, channels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected or not len(images):
            raise EdgesegError(
                f"Core ML reference expects uint8 images [N, {height}, {width}, {channels}], "
                f"got {images.dtype} {list(images.shape)}"
            )
        with _BLAS_LOCK, _single_threaded_blas():  # safe to call from several threads, one at a time
            return np.concatenate([self._run(image) for image in images])

    def _run(self, image: np.ndarray) -> np.ndarray:
        # Core ML hands an image to an ML Program as float32 planar pixels in the input's color order.
        planar = image[..., self._channel_order].transpose(2, 0, 1)[None].astype(np.float32)
        env = dict(self._consts)
        env[self.input_name] = planar
        for step in self._steps:
            step.run(env)
        return np.asarray(env[self.output_name], dtype=np.float32)
