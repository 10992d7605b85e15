"""Edits of .tflite flatbuffers that no converter offers.

Works on bytes in, bytes out, through the flatbuffer object API of the TFLite schema module
that ships with ``ai_edge_litert`` (``ModelT`` and friends), so nothing here depends on how
the model was produced.

- ``inline_buffers``: ai-edge-quantizer stores big weight buffers *after* the flatbuffer
  (``Buffer.offset``/``Buffer.size``). Anything that unpacks and repacks the flatbuffer, such
  as MediaPipe's metadata writer, silently drops that tail. Moving the bytes into
  ``Buffer.data`` makes the model self-contained.
- ``uint8_input_float_output``: neither litert-torch nor ai-edge-quantizer can give a
  full-int8 model uint8 input, which MediaPipe and camera pipelines need.
- ``prepend_input_normalization``: the pixel-input float graph (normalization as its first op)
  derived from the normalized-input one, so export converts a model once, not once per input
  contract (a litert-torch conversion is most of a TFLite export's time).
"""
from __future__ import annotations

from dataclasses import dataclass

from edgeseg.errors import ArtifactError, require

_FILE_IDENTIFIER = b"TFL3"
_INT8_TO_UINT8_ZERO_POINT_SHIFT = 128
# Builtin codes above this are stored in `builtinCode`; `deprecatedBuiltinCode` holds this.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# Op versions for what is added here (TFLite op_version.cc): per-tensor float->int8 QUANTIZE
# is version 1, DEQUANTIZE of uint8 version 1 and of int8 version 2, float DEPTHWISE_CONV_2D 1.
_OP_VERSIONS = {"QUANTIZE": 1, "DEQUANTIZE": 2, "DEPTHWISE_CONV_2D": 1}
# Names of what ``prepend_input_normalization`` adds (the normalized tensor is the layer's output).
NORMALIZATION_TENSOR = "input_normalization"


def _schema():
    return require("ai_edge_litert.schema_py_generated", "tflite", "editing .tflite flatbuffers")


def inline_buffers(model: bytes) -> bytes:
    """Return ``model`` with every buffer's bytes stored inside the flatbuffer.

    Buffers that point past the flatbuffer (``offset``/``size``, as ai-edge-quantizer writes
    large models) and large custom op options are copied into the flatbuffer; data appended
    after the flatbuffer is dropped. The graph itself is unchanged. Raises ``ArtifactError``
    when the bytes are not a TFLite model or refer to data outside the file.
    """
    return _pack(_unpack(model))


def uint8_input_float_output(model: bytes, *, float_output: bool = True) -> bytes:
    """Give a full-int8 model a uint8 input and, optionally, float32 outputs.

    The int8 graph input (scale ``s``, zero point ``z``) becomes an internal tensor fed from a
    new uint8 graph input with scale ``s`` and zero point ``z + 128``: the same real values, so
    the change is exact. The conversion is a DEQUANTIZE to float32 and a QUANTIZE to int8, which
    XNNPACK runs inside its partition (it has no kernel for a uint8 -> int8 QUANTIZE, which left
    that op to TFLite's CPU kernel: measured on the default model, 1 thread, 2.61 -> 2.48 ms,
    identical outputs). With ``float_output``, every int8 graph
    output gets a DEQUANTIZE op into a new float32 graph output. New graph tensors take the
    original names (the int8 tensors get an ``_int8`` suffix) and signatures are updated.
    Raises ``ArtifactError`` if the model does not have a single per-tensor int8 input.
    """
    fb = _schema()
    graph = _Graph(_unpack(model))
    old_input = graph.single_input()
    tensor = graph.tensor(old_input)
    if tensor.type != fb.TensorType.INT8:
        raise ArtifactError(f"uint8 input needs an int8 model input; input '{_name(tensor)}' is {_dtype(tensor.type)}")
    scale, zero_point = _per_tensor_quantization(tensor)
    uint8_quantization = (scale, zero_point + _INT8_TO_UINT8_ZERO_POINT_SHIFT)
    new_input = graph.add_boundary_tensor(old_input, fb.TensorType.UINT8, uint8_quantization)
    as_float = graph.add_tensor(f"{_name(graph.tensor(new_input))}_float32", fb.TensorType.FLOAT32,
                                list(graph.tensor(new_input).shape))
    graph.add_op("QUANTIZE", [as_float], old_input, first=True)
    graph.add_op("DEQUANTIZE", [new_input], as_float, first=True)
    graph.replace_boundary("inputs", old_input, new_input)
    if float_output:
        for old_output in graph.outputs():
            if graph.tensor(old_output).type == fb.TensorType.INT8:
                new_output = graph.add_boundary_tensor(old_output, fb.TensorType.FLOAT32, None)
                graph.add_op("DEQUANTIZE", [old_output], new_output, first=False)
                graph.replace_boundary("outputs", old_output, new_output)
    return _pack(graph.model)


def prepend_input_normalization(model: bytes, mean, std) -> bytes:
    """Put ``(pixel - mean) / std`` (per channel, 0-255 units) in front of a float graph that takes
    normalized NHWC ``[1, H, W, 3]`` input.

    The new float32 graph input (same name, shape and signature key) feeds a 1x1 DEPTHWISE_CONV_2D
    with weights ``1 / std`` and bias ``-mean / std``, the op litert-torch makes of the same
    normalization written as a depthwise conv in PyTorch (one fused XNNPACK kernel); its output is
    the old input tensor, renamed ``NORMALIZATION_TENSOR``. Every other tensor keeps its name, so a
    file quantized from the result shares tensor names with the normalized-input file.
    Raises ``ArtifactError`` unless the model has one float32 ``[1, H, W, 3]`` input.
    """
    fb = _schema()
    graph = _Graph(_unpack(model))
    old_input = graph.single_input()
    tensor = graph.tensor(old_input)
    shape = [int(d) for d in tensor.shape]
    if tensor.type != fb.TensorType.FLOAT32 or len(shape) != 4 or shape[0] != 1 or shape[-1] != 3:
        raise ArtifactError(f"input normalization needs a float32 [1, H, W, 3] input; input '{_name(tensor)}' is "
                            f"{_dtype(tensor.type)} {shape}")
    if len(mean) != 3 or len(std) != 3 or any(float(s) == 0 for s in std):
        raise ArtifactError(f"input normalization needs three means and three non-zero stds, got {mean} / {std}")
    pixels = graph.add_boundary_tensor(old_input, fb.TensorType.FLOAT32, None, old_name=NORMALIZATION_TENSOR)
    weights = graph.add_constant(f"{NORMALIZATION_TENSOR};weights", [1, 1, 1, 3], [1.0 / float(s) for s in std])
    bias = graph.add_constant(f"{NORMALIZATION_TENSOR};bias", [3], [-float(m) / float(s) for m, s in zip(mean, std)])
    options = fb.DepthwiseConv2DOptionsT()
    options.padding, options.strideW, options.strideH, options.depthMultiplier = fb.Padding.VALID, 1, 1, 1
    options.dilationWFactor = options.dilationHFactor = 1
    options.fusedActivationFunction = fb.ActivationFunctionType.NONE
    graph.add_op("DEPTHWISE_CONV_2D", [pixels, weights, bias], old_input, first=True,
                 options=(fb.BuiltinOptions.DepthwiseConv2DOptions, options))
    graph.replace_boundary("inputs", old_input, pixels)
    return _pack(graph.model)


def io_details(model: bytes) -> tuple[list[dict], list[dict]]:
    """Describe the first subgraph's inputs and outputs without running the model.

    Each entry has ``name``, ``shape`` (list of ints), ``dtype`` (``"float32"``, ``"uint8"``,
    ...) and, for per-tensor quantized integer tensors, ``quantization`` =
    ``{"scale": float, "zero_point": int}``.
    """
    graph = _Graph(_unpack(model))
    return ([_describe(graph.tensor(i)) for i in graph.subgraph.inputs],
            [_describe(graph.tensor(i)) for i in graph.subgraph.outputs])


def _describe(tensor) -> dict:
    entry = {"name": _name(tensor), "shape": [int(d) for d in tensor.shape], "dtype": _dtype(tensor.type)}
    quantized = tensor.quantization is not None and tensor.quantization.scale is not None
    if entry["dtype"].startswith(("int", "uint")) and quantized:
        scale, zero_point = _per_tensor_quantization(tensor)
        entry["quantization"] = {"scale": scale, "zero_point": zero_point}
    return entry


@dataclass
class _Graph:
    """The first subgraph of a ``ModelT`` plus the bookkeeping edits need."""

    model: object

    @property
    def subgraph(self):
        return self.model.subgraphs[0]

    def tensor(self, index: int):
        return self.subgraph.tensors[index]

    def single_input(self) -> int:
        inputs = list(self.subgraph.inputs)
        if len(inputs) != 1:
            raise ArtifactError(f"expected a model with one input, found {len(inputs)}")
        return inputs[0]

    def outputs(self) -> list[int]:
        return list(self.subgraph.outputs)

    def add_boundary_tensor(self, like: int, dtype: int, quantization: tuple[float, int] | None,
                            old_name: str | None = None) -> int:
        """Add a tensor shaped like tensor ``like`` that takes over its name (``like`` is renamed ``old_name``,
        by default its name with its dtype appended); return its index."""
        fb = _schema()
        old = self.tensor(like)
        new = fb.TensorT()
        new.name = _name(old)
        new.type = dtype
        new.shape = list(old.shape)
        new.shapeSignature = None if old.shapeSignature is None else list(old.shapeSignature)
        new.buffer = self._empty_buffer()
        if quantization is not None:
            new.quantization = fb.QuantizationParametersT()
            new.quantization.scale = [float(quantization[0])]
            new.quantization.zeroPoint = [int(quantization[1])]
        old.name = old_name or f"{_name(old)}_{_dtype(old.type)}"
        self.subgraph.tensors.append(new)
        return len(self.subgraph.tensors) - 1

    def add_tensor(self, name: str, dtype: int, shape: list[int]) -> int:
        """Add an activation tensor (no data); return its index."""
        fb = _schema()
        tensor = fb.TensorT()
        tensor.name, tensor.type, tensor.shape = name, dtype, list(shape)
        tensor.buffer = self._empty_buffer()
        self.subgraph.tensors.append(tensor)
        return len(self.subgraph.tensors) - 1

    def add_constant(self, name: str, shape: list[int], values: list[float]) -> int:
        """Add a float32 constant tensor with its own buffer; return its index."""
        import numpy as np

        fb = _schema()
        buffer = fb.BufferT()
        buffer.data = np.frombuffer(np.asarray(values, np.float32).reshape(shape).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        index = self.add_tensor(name, fb.TensorType.FLOAT32, shape)
        self.tensor(index).buffer = len(self.model.buffers) - 1
        return index

    def add_op(self, op_name: str, inputs: list[int], dst: int, *, first: bool, options: tuple | None = None) -> None:
        """Add a one-output builtin op (a key of ``_OP_VERSIONS``), first or last; ``options``:
        (``BuiltinOptions`` type, options object)."""
        fb = _schema()
        op = fb.OperatorT()
        op.opcodeIndex = self._opcode_index(op_name)
        op.inputs = list(inputs)
        op.outputs = [dst]
        if options is not None:
            op.builtinOptionsType, op.builtinOptions = options
        operators = list(self.subgraph.operators or [])
        operators.insert(0 if first else len(operators), op)
        self.subgraph.operators = operators

    def replace_boundary(self, side: str, old: int, new: int) -> None:
        """Make tensor ``new`` the graph/signature input or output (``side``) that ``old`` was."""
        setattr(self.subgraph, side, [new if i == old else i for i in getattr(self.subgraph, side)])
        signatures = [sig for sig in self.model.signatureDefs or [] if sig.subgraphIndex == 0]
        for tensor_map in (m for sig in signatures for m in getattr(sig, side) or []):
            if tensor_map.tensorIndex == old:
                tensor_map.tensorIndex = new

    def _empty_buffer(self) -> int:
        fb = _schema()
        for index, buffer in enumerate(self.model.buffers):
            if (buffer.data is None or len(buffer.data) == 0) and not buffer.size:
                return index
        self.model.buffers.append(fb.BufferT())
        return len(self.model.buffers) - 1

    def _opcode_index(self, op_name: str) -> int:
        fb = _schema()
        builtin, version = getattr(fb.BuiltinOperator, op_name), _OP_VERSIONS[op_name]
        codes = self.model.operatorCodes
        for index, code in enumerate(codes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and code.customCode is None:
                code.version = max(code.version, version)
                return index
        code = fb.OperatorCodeT()
        code.builtinCode = builtin
        code.deprecatedBuiltinCode = min(builtin, _PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = version
        codes.append(code)
        return len(codes) - 1


def _unpack(model: bytes):
    """Parse ``model`` into a mutable ``ModelT`` whose buffers all hold their own data."""
    fb = _schema()
    model = bytes(model)
    if len(model) < 8 or not fb.Model.ModelBufferHasIdentifier(model, 0):
        raise ArtifactError("not a TFLite model (missing the 'TFL3' flatbuffer identifier)")
    obj = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    for index, buffer in enumerate(obj.buffers or []):
        if buffer.offset > 1:
            buffer.data = _tail_slice(model, buffer.offset, buffer.size, f"buffer {index}")
            buffer.offset = buffer.size = 0
    for subgraph in obj.subgraphs or []:
        for op in subgraph.operators or []:
            if op.largeCustomOptionsOffset > 1:
                op.customOptions = _tail_slice(model, op.largeCustomOptionsOffset, op.largeCustomOptionsSize,
                                               "custom options")
                op.largeCustomOptionsOffset = op.largeCustomOptionsSize = 0
    if obj.externalBuffers:
        raise ArtifactError("model keeps weights in external files (external buffers); cannot embed them")
    return obj


def _tail_slice(model: bytes, offset: int, size: int, what: str):
    import numpy as np

    if offset + size > len(model):
        raise ArtifactError(f"truncated TFLite model: {what} ends at byte {offset + size}, file has {len(model)}")
    return np.frombuffer(model, dtype=np.uint8, count=size, offset=offset)


def _pack(obj) -> bytes:
    flatbuffers = require("flatbuffers", "tflite", "writing .tflite flatbuffers")
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _per_tensor_quantization(tensor) -> tuple[float, int]:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1 or q.zeroPoint is None or len(q.zeroPoint) != 1:
        raise ArtifactError(f"tensor '{_name(tensor)}' is not quantized per tensor")
    return float(q.scale[0]), int(q.zeroPoint[0])


def _name(tensor) -> str:
    name = tensor.name
    return name.decode("utf-8") if isinstance(name, bytes) else str(name or "")


def _dtype(tensor_type: int) -> str:
    """numpy-style name of a TFLite ``TensorType`` value: ``"int8"``, ``"float32"``..."""
    fb = _schema()
    names = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    return names.get(tensor_type, str(tensor_type))

