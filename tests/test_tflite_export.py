"""TFLite export end to end with the real libraries: litert-torch, ai-edge-quantizer,
ai_edge_litert (XNNPACK) and MediaPipe Tasks ImageSegmenter, on a tiny 64x64 segmenter.

Each case is converted once per module; the tests then check the file's I/O contract,
its argmax agreement with PyTorch, that MediaPipe loads it and agrees with our own
interpreter, its XNNPACK partitioning, and the metadata read back.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("ai_edge_quantizer")
pytest.importorskip("mediapipe")

from ai_edge_litert import schema_py_generated as fb  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edgeseg.errors import ArtifactError, EdgesegError  # noqa: E402
from edgeseg.export.mediapipe_metadata import add_segmenter_metadata, read_segmenter_metadata  # noqa: E402
from edgeseg.export.tflite_convert import TFLITE_PRECISIONS, convert_tflite  # noqa: E402
from edgeseg.export.tflite_flatbuffer import (  # noqa: E402
    NORMALIZATION_TENSOR, inline_buffers, prepend_input_normalization, uint8_input_float_output)

SIZE = 64
UNIFORM = ([127.5] * 3, [127.5] * 3)
IMAGENET = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
FOLDABLE = ([128.0] * 3, [64.0] * 3)  # one mean/std, integer mean: int8 folds it into the uint8 input
# case id -> (precision, classes, (mean, std)). Per-channel mean/std take the in-graph
# normalization path ("pixels" input); uniform ones the MediaPipe-normalized path.
CASES = {
    "fp32": ("fp32", 2, IMAGENET),
    "fp16": ("fp16", 4, UNIFORM),
    "int8": ("int8", 4, IMAGENET),
    "int8-folded": ("int8", 2, FOLDABLE),
}
TRAIN_STEPS = 40
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "int8": 0.95}


class TinySeg(torch.nn.Module):
    """MobileNetV3/LR-ASPP in miniature: every op kind the real models export."""

    def __init__(self, classes: int, width: int = 8):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.Hardswish())
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False), nn.BatchNorm2d(width), nn.Hardswish(),
            nn.Conv2d(width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width), nn.Hardswish())
        self.down = nn.Sequential(  # stride-2 downsample
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 1), nn.ReLU())
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * width, 2 * width, 1), nn.Sigmoid())
        self.head = nn.Conv2d(4 * width, classes, 1)

    def forward(self, x):
        skip = self.block(self.stem(x))
        low = self.down(skip)
        y = self.branch(low) * self.gate(low)
        y = torch.nn.functional.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = self.head(torch.cat([y, skip], 1))
        return torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _scenes(seed: int, count: int, classes: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Photo-like scenes (smooth colour fields, noise, one bright ellipse) and label maps.

    Label 1 is the ellipse; with more classes the background is split by its dominant
    colour (red -> 2, blue -> 3), so every class covers real area.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    images, masks = [], []
    for _ in range(count):
        coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 4, 4)).astype(np.float32))
        field = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0]
        field = field.permute(1, 2, 0).numpy()
        mask = np.zeros((SIZE, SIZE), np.int64)
        if classes > 2:
            mask[field.argmax(-1) == 0] = 2
            mask[field.argmax(-1) == 2] = 3
        cy, cx, ry, rx = rng.uniform(0.3, 0.7, 2).tolist() + rng.uniform(0.12, 0.3, 2).tolist()
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        image = field + rng.normal(0, 8, field.shape)
        image[inside] = rng.uniform(200, 255)
        mask[inside] = 1
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask)
    return images, masks


def _trained_model(classes: int, mean, std) -> TinySeg:
    """A TinySeg fitted for a few seconds: an untrained one predicts one class everywhere,
    which would make every agreement check pass trivially."""
    torch.manual_seed(classes)
    model = TinySeg(classes)
    images, masks = _scenes(seed=1, count=32, classes=classes)
    x = torch.stack([_normalized(image, mean, std) for image in images])
    y = torch.from_numpy(np.stack(masks))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention (10x slower on a busy box)
    try:
        for step in range(TRAIN_STEPS):
            batch = slice(step * 8 % 32, step * 8 % 32 + 8)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _normalized(pixels: np.ndarray, mean, std):
    return ((torch.from_numpy(pixels).float() - torch.tensor(mean)) / torch.tensor(std)).permute(2, 0, 1)


def _torch_argmax(model, pixels: np.ndarray, mean, std) -> np.ndarray:
    with torch.no_grad():
        return model(_normalized(pixels, mean, std)[None])[0].argmax(0).numpy()


def _model_input(result, pixels: np.ndarray, mean, std) -> np.ndarray:
    """What the file's own contract says to feed it for these pixels."""
    if result.input["dtype"] == "uint8":
        return pixels[None]
    if result.input["expects"] == "pixels":
        return pixels[None].astype(np.float32)
    return ((pixels.astype(np.float32) - np.float32(mean)) / np.float32(std))[None]


def _interpreter_logits(data: bytes, batch: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=data, num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]


def _logits(result, pixels: np.ndarray, mean, std) -> np.ndarray:
    return _interpreter_logits(result.data, _model_input(result, pixels, mean, std))


def _mediapipe_masks(path, images: list[np.ndarray]) -> list[np.ndarray]:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           running_mode=vision.RunningMode.IMAGE, output_category_mask=True)
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        # numpy_view() aliases memory that the next segment() call reuses: copy it.
        results = (segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=image)) for image in images)
        return [result.category_mask.numpy_view()[..., 0].copy() for result in results]


@pytest.fixture(scope="module")
def test_images():
    return _scenes(seed=12345, count=6, classes=4)[0]


def _export(case_id: str, test_images) -> dict:
    precision, classes, (mean, std) = CASES[case_id]
    model = _trained_model(classes, mean, std)
    labels = [f"class{i}" for i in range(classes)]
    calib_images = _scenes(seed=777, count=8, classes=classes)[0]
    result = convert_tflite(model, height=SIZE, width=SIZE, mean=mean, std=std, labels=labels, precision=precision,
                            calib_images=calib_images, name=f"tiny-{case_id}", description="test model")
    expected = [_torch_argmax(model, image, mean, std) for image in test_images]
    ours = [_logits(result, image, mean, std).argmax(-1) for image in test_images]
    return {"id": case_id, "precision": precision, "classes": classes, "mean": mean, "std": std, "model": model,
            "labels": labels, "result": result, "expected": expected, "ours": ours}


@pytest.fixture(scope="module")
def exports(test_images):
    """Case id -> converted case; each case is converted at most once per module."""
    cache = {}

    def get(case_id: str) -> dict:
        if case_id not in cache:
            cache[case_id] = _export(case_id, test_images)
        return cache[case_id]

    return get


@pytest.fixture(params=list(CASES))
def case(request, exports):
    return exports(request.param)


def test_nhwc_io_contract(case):
    result, classes = case["result"], case["classes"]
    assert result.input["shape"] == [1, SIZE, SIZE, 3] and result.input["layout"] == "NHWC"
    assert result.output["shape"] == [1, SIZE, SIZE, classes] and result.output["layout"] == "NHWC"
    assert result.output["dtype"] == "float32"
    if case["precision"] == "int8":
        assert result.input["dtype"] == "uint8" and result.input["expects"] == "pixels"
        # raw pixels either way: scale 1, or the normalization itself (scale 1/std, zero point = mean)
        scale, zero_point = (1 / FOLDABLE[1][0], 128) if case["mean"] == FOLDABLE[0] else (1.0, 0)
        assert result.input["quantization"] == {"scale": pytest.approx(scale, rel=1e-6), "zero_point": zero_point}
    else:
        assert result.input["dtype"] == "float32"
        # MediaPipe cannot normalize per channel, so per-channel mean/std move into the graph.
        assert result.input["expects"] == ("normalized" if case["mean"] == UNIFORM[0] else "pixels")


def test_argmax_agrees_with_torch(case):
    # Guard against a trivial pass: the reference must actually predict every class.
    assert len(np.unique(np.concatenate(case["expected"]))) == case["classes"]
    agreement = np.mean([np.mean(a == b) for a, b in zip(case["ours"], case["expected"])])
    assert agreement >= MIN_AGREEMENT[case["precision"]], f"{case['id']}: {agreement:.4f}"


def test_mediapipe_segmenter_matches_interpreter(case, test_images, tmp_path):
    path = tmp_path / f"{case['id']}.tflite"
    path.write_bytes(case["result"].data)
    masks = _mediapipe_masks(path, test_images)
    for mask, image, ours in zip(masks, test_images, case["ours"]):
        assert mask.shape == (SIZE, SIZE)
        if case["precision"] != "int8":
            np.testing.assert_array_equal(mask, ours)
            continue
        # MediaPipe's own runtime sometimes lands one output step (1 LSB) away from
        # ai_edge_litert's; that only flips pixels whose top two logits were within a step.
        logits = _logits(case["result"], image, case["mean"], case["std"])
        step = np.diff(np.unique(logits)).min()
        top2 = np.sort(logits, axis=-1)[..., -2:]
        differ = mask != ours
        assert np.all(top2[differ, 1] - top2[differ, 0] <= step * 1.01)
        # near-ties are rare: the tiny random-weight model has more of them than a trained one
        assert differ.mean() <= 0.005


def test_xnnpack_partitions(case):
    result = case["result"]
    assert result.xnnpack_partitions == 1
    # XNNPACK has no uint8 -> int8 QUANTIZE kernel: the uint8 input reaches int8 through a DEQUANTIZE
    # and a QUANTIZE, which it runs, so nothing is left outside the partition.
    assert result.ops_not_delegated == []
    if case["precision"] == "int8":
        assert "HARD_SWISH kept float" in result.quantized  # int8 HARD_SWISH would split the graph


def test_metadata_reads_back(case):
    metadata = read_segmenter_metadata(case["result"].data)
    assert metadata["labels"] == case["labels"]
    assert metadata["activation"] == "softmax"
    assert metadata["name"] == f"tiny-{case['id']}"
    if case["result"].input["expects"] == "normalized":
        assert (metadata["mean"], metadata["std"]) == (case["mean"], case["std"])
    else:
        assert (metadata["mean"], metadata["std"]) == ([0.0], [1.0])


def _outline_buffers(model: bytes) -> bytes:
    """Store every non-trivial buffer after the flatbuffer, the way ai-edge-quantizer does."""
    obj = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    moved = {i: bytes(b.data) for i, b in enumerate(obj.buffers) if b.data is not None and len(b.data) >= 64}
    for i in moved:
        obj.buffers[i].data, obj.buffers[i].offset, obj.buffers[i].size = None, 1, 1
    head_size = len(_pack(obj))
    position, tail = -(-head_size // 16) * 16, b""
    for i, data in moved.items():
        obj.buffers[i].offset, obj.buffers[i].size = position + len(tail), len(data)
        tail += data + b"\0" * (-len(data) % 16)
    head = _pack(obj)
    assert len(head) == head_size
    return head + b"\0" * (position - head_size) + tail


def _pack(obj) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_inline_buffers_keeps_outlined_weights(exports, test_images):
    result = exports("fp32")["result"]
    outlined = _outline_buffers(result.data)
    inlined = inline_buffers(outlined)
    model = fb.Model.GetRootAs(inlined, 0)
    assert all(model.Buffers(i).Offset() == 0 for i in range(model.BuffersLength()))
    batch = _model_input(result, test_images[0], *IMAGENET)
    np.testing.assert_array_equal(_interpreter_logits(inlined, batch), _interpreter_logits(outlined, batch))
    np.testing.assert_array_equal(_interpreter_logits(inlined, batch), _interpreter_logits(result.data, batch))


def test_unsupported_precision_is_named():
    with pytest.raises(EdgesegError, match="int4"):
        convert_tflite(TinySeg(2).eval(), height=SIZE, width=SIZE, mean=UNIFORM[0], std=UNIFORM[1], labels=["a", "b"],
                       precision="int4", calib_images=[], name="x", description="x")
    assert "int4" not in TFLITE_PRECISIONS


def test_uint8_input_needs_an_int8_model(exports):
    with pytest.raises(ArtifactError, match="float32"):
        uint8_input_float_output(exports("fp32")["result"].data)


def test_metadata_writer_refuses_what_mediapipe_would_reject(exports):
    float_model, int8_model = exports("fp16")["result"].data, exports("int8")["result"].data
    four = {"labels": ["a", "b", "c", "d"], "name": "x", "description": "x"}
    with pytest.raises(EdgesegError, match="per-channel"):
        add_segmenter_metadata(float_model, mean=IMAGENET[0], std=IMAGENET[1], **four)
    with pytest.raises(EdgesegError, match="3 labels for an output with 4 channels"):
        add_segmenter_metadata(float_model, mean=[127.5], std=[127.5], **{**four, "labels": ["a", "b", "c"]})
    with pytest.raises(EdgesegError, match="raw pixels"):
        add_segmenter_metadata(int8_model, mean=[127.5], std=[127.5], **four)


def test_metadata_shim_does_not_outlive_the_import(exports):
    assert exports("fp32")["result"].data
    assert not [name for name in sys.modules if name.startswith("mediapipe.tasks.cc")]


def test_no_metadata_reads_as_none(exports):
    obj = fb.ModelT.InitFromObj(fb.Model.GetRootAs(exports("fp32")["result"].data, 0))
    obj.metadata = None
    assert read_segmenter_metadata(_pack(obj)) is None


def test_int8_normalization_range_covers_every_pixel_value(exports):
    """Calibrated on its images alone, the in-graph normalization's int8 range clipped bright pixels."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeseg.runtime.base import normalized_range

    case = next(exports(c) for c in CASES if CASES[c][0] == "int8")
    interp = Interpreter(model_content=case["result"].data)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    norm = next(op for op in interp._get_ops_details() if op["op_name"] == "DEPTHWISE_CONV_2D")
    scale, zero = tensors[norm["outputs"][0]]["quantization"]
    low, high = normalized_range(case["mean"], case["std"])
    assert (-128 - zero) * scale == pytest.approx(low, abs=scale) and (127 - zero) * scale == pytest.approx(high, abs=scale)


def test_pixel_input_graph_is_the_converted_graph_behind_one_depthwise_conv(exports, test_images):
    """Export converts a model once; the pixel-input float graph (per-channel mean/std, and what int8 is quantized
    from) is that graph with the normalization put in front by a flatbuffer edit: exact, not approximately."""
    case = exports("fp32")  # per-channel mean/std: pixel input
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(case["result"].data, 0))
    graph = model.subgraphs[0]
    first = graph.operators[0]
    code = model.operatorCodes[first.opcodeIndex]
    assert max(code.builtinCode, code.deprecatedBuiltinCode) == fb.BuiltinOperator.DEPTHWISE_CONV_2D
    assert first.inputs[0] == graph.inputs[0] and graph.tensors[first.outputs[0]].name == NORMALIZATION_TENSOR.encode()
    weights, bias = (np.frombuffer(bytes(model.buffers[graph.tensors[i].buffer].data), np.float32) for i in first.inputs[1:])
    np.testing.assert_allclose(weights, 1 / np.float32(case["std"]), rtol=1e-6)
    np.testing.assert_allclose(bias, -np.float32(case["mean"]) / np.float32(case["std"]), rtol=1e-6)
    ours = _logits(case["result"], test_images[0], case["mean"], case["std"])
    with torch.no_grad():
        model_logits = case["model"](_normalized(test_images[0], case["mean"], case["std"])[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, model_logits, atol=1e-4)


def test_input_normalization_needs_a_float_rgb_input(exports):
    with pytest.raises(ArtifactError, match=r"needs a float32 \[1, H, W, 3\] input; input .* is uint8"):
        prepend_input_normalization(exports("int8")["result"].data, *IMAGENET)


def test_int8_with_an_integer_uniform_mean_has_no_normalization_op(exports):
    """(pixel - 128) / 64 is the uint8 input's own dequantization: the int8 graph starts at the model's first
    layer, where the per-channel case has a depthwise normalization op reading the input."""
    def first_layer(data: bytes) -> str:
        interp = Interpreter(model_content=data)
        ops = interp._get_ops_details()
        quantize = next(op for op in ops if op["op_name"] == "QUANTIZE")  # the uint8 -> int8 input
        return next(op["op_name"] for op in ops if quantize["outputs"][0] in op["inputs"])

    folded, per_channel = exports("int8-folded")["result"], exports("int8")["result"]
    assert "normalization folded into the uint8 input (scale 1/64, zero point 128)" in folded.quantized
    assert first_layer(per_channel.data) == "DEPTHWISE_CONV_2D"
    assert first_layer(folded.data) in ("CONV_2D", "PAD")
