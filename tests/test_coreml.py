"""Core ML export and the numpy reference interpreter, with real coremltools.

Tiny 64x64 models defined here are converted at every precision (module-scoped cache); the
reference interpreter's logits are compared with PyTorch, and deliberately broken copies of a
package must diverge. Prediction with Core ML itself runs on macOS only.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")
nn = torch.nn
F = torch.nn.functional

from coremltools.proto import Model_pb2  # noqa: E402

from edgeseg.errors import ArtifactError, EdgesegError  # noqa: E402
from edgeseg.export.coreml_convert import (  # noqa: E402
    COREML_PRECISIONS,
    _PRECISIONS,
    convert_coreml,
    image_normalization,
    read_coreml_info,
)
from edgeseg.runtime.coreml_reference import OPS, CoreMLReferenceProgram  # noqa: E402

SIZE = 64
LABELS = ["background", "person", "pet", "sky"]
IMAGENET = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
EQUAL = ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
MODEL_FILE = "Data/com.apple.CoreML/model.mlmodel"
WEIGHT_FILE = "Data/com.apple.CoreML/weights/weight.bin"
WEIGHT_THRESHOLD = 100  # compress every conv weight of the tiny models


class TinySeg(nn.Module):
    """MobileNetV3/LR-ASPP in miniature: hardswish stem, depthwise stride 2, gating, skip, upsample."""

    def __init__(self, classes: int = len(LABELS)):
        super().__init__()
        self.align_corners = False
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.down = nn.Sequential(
            nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.Hardswish(),
        )
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(24, 24, 1), nn.Sigmoid())
        self.head = nn.Conv2d(40, classes, 1)

    def _up(self, x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x):
        skip = self.stem(x)
        deep = self.down(skip)
        deep = deep * self.gate(deep)
        y = self.head(torch.cat([self._up(deep, skip.shape[-2:]), skip], 1))
        return self._up(y, x.shape[-2:])


class OpsZoo(nn.Module):
    """Less common ops: relu6, avg_pool (both padding modes), sub/div/clip, same-padded dilated
    conv, a batch norm the converter cannot fold, channel shuffle, softmax, align_corners resize."""

    def __init__(self, classes: int = len(LABELS)):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.pool2 = nn.AvgPool2d(2)
        self.dilated = nn.Conv2d(8, 8, 3, padding="same", dilation=2)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        a = F.relu6(self.stem(x))
        b = torch.clamp(self.pool(a) - a / (2 + torch.sigmoid(a)), -1.0, 2.0)
        c = self.bn(torch.cat([a, self.dilated(b)], 1))
        n, ch, h, w = c.shape
        c = c.reshape(n, 2, ch // 2, h, w).transpose(1, 2).reshape(n, ch, h, w)
        y = self.head(c * torch.softmax(c, dim=1))
        y = F.interpolate(self.pool2(y), size=(24, 24), mode="bilinear", align_corners=True)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=(2.0 / m.weight[0].numel()) ** 0.5)
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model.eval()


CASES = {  # name -> (model factory, (mean, std))
    "perchannel": (lambda: _seeded(TinySeg(), 0), IMAGENET),
    "equal": (lambda: _seeded(TinySeg(), 0), EQUAL),
    "ops": (lambda: _seeded(OpsZoo(), 1), IMAGENET),
}


def _images(n: int = 2) -> np.ndarray:
    """Smooth gradients with a disc and some noise: structured enough for stable argmax."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    out = []
    for i in range(n):
        disc = ((xx - 0.3 - 0.4 * i) ** 2 + (yy - 0.5) ** 2) < 0.08
        rgb = np.stack([xx, yy, 1 - xx * yy], -1) * 200 + disc[..., None] * [50, -80, 40]
        out.append(np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255))
    return np.asarray(out, dtype=np.uint8)


def _torch_logits(model, images, mean, std) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).numpy()


def _rel_err(out, ref) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def models():
    return {name: factory() for name, (factory, _) in CASES.items()}


@pytest.fixture(scope="module")
def export(models, tmp_path_factory):
    """export(case, precision, target) -> (package path, CoreMLResult), converted once each."""
    root = tmp_path_factory.mktemp("coreml")
    cache = {}

    def get(case: str, precision: str, target: str = "iOS16"):
        key = (case, precision, target)
        if precision == "pal6":
            pytest.importorskip("sklearn", reason="k-means palettization needs scikit-learn")
        if key not in cache:
            mean, std = CASES[case][1]
            dest = root / f"{case}_{precision}_{target}.mlpackage"
            result = convert_coreml(
                models[case], height=SIZE, width=SIZE, mean=mean, std=std, labels=LABELS,
                precision=precision, dest=dest, description=f"tiny {case} segmenter",
                metadata={"recipe": "tiny.yaml", "epochs": 3, "classes": json.dumps(LABELS), "input_size": [64, 64]},
                minimum_target=target,
                weight_threshold=WEIGHT_THRESHOLD,
            )
            cache[key] = (dest, result)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def reference(export, models):
    """reference(case, precision, target) -> (reference logits, torch logits) on _images()."""
    images = _images()

    def run(case: str, precision: str, target: str = "iOS16"):
        dest, _ = export(case, precision, target)
        mean, std = CASES[case][1]
        return CoreMLReferenceProgram.load(dest).predict(images), _torch_logits(models[case], images, mean, std)

    return run


# ----------------------------------------------------------------------------- converter


def test_precision_names_match_the_table():
    assert COREML_PRECISIONS == ("fp32", "fp16", "int8", "pal6") == tuple(_PRECISIONS)


@pytest.mark.parametrize(
    "mean,std", [IMAGENET, EQUAL, ((0.0, 10.0, 255.0), (1.0, 64.0, 3.5))], ids=["imagenet", "equal", "odd"]
)
def test_image_normalization_reproduces_mean_std(mean, std):
    scale, bias, factors = image_normalization(mean, std)
    pixels = np.arange(256, dtype=np.float64)[:, None]
    got = (scale * pixels + np.asarray(bias)) * np.asarray(factors or [1.0, 1.0, 1.0])
    np.testing.assert_allclose(got, (pixels - np.asarray(mean)) / np.asarray(std), rtol=1e-12, atol=1e-12)
    assert (factors is None) == (len(set(std)) == 1)


@pytest.mark.parametrize("precision", COREML_PRECISIONS)
def test_package_contract(export, precision):
    dest, result = export("perchannel", precision)
    info = read_coreml_info(dest)
    (image,) = info["inputs"]
    (logits,) = info["outputs"]
    assert image["kind"] == "imageType" and image["color"] == "RGB"
    assert (image["height"], image["width"]) == (SIZE, SIZE)
    assert image["shape"] == [1, 3, SIZE, SIZE] and image["dtype"] == "uint8"
    assert info["params"] == sum(p.numel() for m in TinySeg().modules() if isinstance(m, nn.Conv2d)
                                 for p in m.parameters()) + 16 + 16 + 24  # BN shifts become conv biases
    assert logits["kind"] == "multiArrayType" and logits["dtype"] == "FLOAT32"
    assert logits["shape"] == [1, len(LABELS), SIZE, SIZE]
    assert info["minimum_target"] == "iOS16" and info["spec_version"] >= 7
    assert image["description"] and logits["description"]
    assert image["scale"] == pytest.approx(result.input["scale"], rel=1e-6)
    assert image["bias"] == pytest.approx(result.input["bias"], rel=1e-6)

    meta = info["metadata"]
    assert meta["short_description"] == "tiny perchannel segmenter" and meta["author"] and meta["version"]
    user = meta["user_defined"]
    assert user["classes"] == '["background", "person", "pet", "sky"]'
    assert user["mean"] == "[123.675, 116.28, 103.53]" and user["std"] == "[58.395, 57.12, 57.375]"
    assert user["input_size"] == "[64, 64]" and user["precision"] == precision
    assert user["recipe"] == "tiny.yaml" and user["epochs"] == "3"

    scale, bias, _ = image_normalization(*IMAGENET)
    assert result.input == {
        "name": "image", "shape": [1, 3, SIZE, SIZE], "dtype": "uint8", "layout": "NCHW",
        "expects": "pixels", "color": "RGB", "scale": scale, "bias": bias,
    }
    assert result.output == {
        "name": "logits", "shape": [1, len(LABELS), SIZE, SIZE], "dtype": "float32", "layout": "NCHW",
    }
    assert user["quantized"] == result.quantized

    compression = {"int8": "constexpr_affine_dequantize", "pal6": "constexpr_lut_to_dense"}.get(precision)
    constexpr = {op: n for op, n in info["ops"].items() if op.startswith("constexpr")}
    assert constexpr == ({compression: 5} if compression else {})  # all five conv weights
    assert ("cast" in info["ops"]) == (precision != "fp32")


def test_equal_std_uses_the_image_type_alone(export):
    equal = read_coreml_info(export("equal", "fp32")[0])
    perchannel = read_coreml_info(export("perchannel", "fp32")[0])
    assert equal["inputs"][0]["scale"] == pytest.approx(1 / 127.5)
    assert equal["inputs"][0]["bias"] == pytest.approx([-1.0, -1.0, -1.0])
    assert perchannel["ops"]["mul"] == equal["ops"]["mul"] + 1  # the folded per-channel 1/std


def test_ios18_target_uses_blockwise_compression_ops(export):
    assert read_coreml_info(export("perchannel", "int8", "iOS18")[0])["ops"]["constexpr_blockwise_shift_scale"] == 5
    assert read_coreml_info(export("perchannel", "pal6", "iOS18")[0])["minimum_target"] == "iOS18"


def _convert(model, tmp_path, **overrides):
    kwargs = dict(height=SIZE, width=SIZE, mean=IMAGENET[0], std=IMAGENET[1], labels=LABELS, precision="fp32",
                  dest=tmp_path / "m.mlpackage", description="d", metadata={})
    return convert_coreml(model, **{**kwargs, **overrides})


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"precision": "int4"}, "'int4'.*fp32, fp16, int8, pal6"),
        ({"labels": ["a", "b"]}, "2 labels.*4 output channels"),
        ({"metadata": {"classes": '["a", "b", "c", "d"]'}}, "'classes'.*contradicts"),
        ({"minimum_target": "iOS15"}, "'iOS15'"),
        ({"std": (1.0, 0.0, 1.0)}, "std > 0"),
    ],
    ids=["precision", "labels", "contradicting-metadata", "target", "std"],
)
def test_bad_arguments_raise_before_converting(models, tmp_path, overrides, message):
    with pytest.raises(EdgesegError, match=message):
        _convert(models["perchannel"], tmp_path, **overrides)
    assert not (tmp_path / "m.mlpackage").exists()


def test_failed_save_leaves_the_old_package(models, tmp_path, monkeypatch):
    dest = tmp_path / "m.mlpackage"
    dest.mkdir()
    (dest / "marker").write_text("old")

    def broken_save(self, path):
        (Path(path) / "partial").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(ct.models.MLModel, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _convert(models["perchannel"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]
    assert sorted(p.name for p in dest.iterdir()) == ["marker"]


# ----------------------------------------------------------------------------- reference vs PyTorch


@pytest.mark.parametrize(
    "case,precision,target,max_rel",
    [
        ("perchannel", "fp32", "iOS16", 1e-3),
        ("equal", "fp32", "iOS16", 1e-3),
        ("ops", "fp32", "iOS16", 1e-3),
        ("perchannel", "fp16", "iOS16", 1e-2),
        ("ops", "fp16", "iOS16", 1e-2),
        ("perchannel", "int8", "iOS16", 5e-2),
        ("perchannel", "pal6", "iOS16", 1e-1),
        ("perchannel", "int8", "iOS18", 5e-2),
        ("perchannel", "pal6", "iOS18", 1e-1),
    ],
)
def test_reference_matches_pytorch(reference, case, precision, target, max_rel):
    out, ref = reference(case, precision, target)
    assert out.dtype == np.float32 and out.shape == ref.shape == (2, len(LABELS), SIZE, SIZE)
    assert _rel_err(out, ref) <= max_rel
    assert (out.argmax(1) == ref.argmax(1)).mean() >= (0.98 if precision in ("int8", "pal6") else 0.995)


def test_reference_rejects_wrong_images(export):
    program = CoreMLReferenceProgram.load(export("perchannel", "fp32")[0])
    with pytest.raises(EdgesegError, match=r"uint8 images \[N, 64, 64, 3\]"):
        program.predict(_images().astype(np.float32))
    with pytest.raises(EdgesegError, match="got uint8"):
        program.predict(_images()[:, :32])


# ----------------------------------------------------------------------------- broken packages


def _edited_copy(src, dst, edit):
    """Copy a package and apply ``edit(block)`` to the main block of its program spec."""
    shutil.copytree(src, dst)
    model_file = dst / MODEL_FILE
    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    function = spec.mlProgram.functions["main"]
    edit(function.block_specializations[function.opset])
    model_file.write_bytes(spec.SerializeToString())
    return dst


def _ops(block, op_type):
    return [op for op in block.operations if op.type == op_type]


def _flip_align_corners(block):
    names = {op.inputs["align_corners"].arguments[0].name for op in _ops(block, "upsample_bilinear")}
    for op in _ops(block, "const"):
        if op.outputs[0].name in names:
            bools = op.attributes["val"].immediateValue.tensor.bools.values
            bools[0] = not bools[0]


def _drop_input_bias(block):
    (scaled,) = [op.outputs[0].name for op in _ops(block, "mul") if op.inputs["x"].arguments[0].name == "image"]
    (index,) = [i for i, op in enumerate(block.operations)
                if op.type == "add" and op.inputs["x"].arguments[0].name == scaled]
    biased = block.operations[index].outputs[0].name
    del block.operations[index]
    for op in block.operations:
        for arg in op.inputs.values():
            for a in arg.arguments:
                if a.name == biased:
                    a.name = scaled


def test_flipped_align_corners_diverges_and_matches_pytorch_align_corners(export, models, tmp_path):
    src, _ = export("perchannel", "fp32")
    program = CoreMLReferenceProgram.load(_edited_copy(src, tmp_path / "flip.mlpackage", _flip_align_corners))
    out = program.predict(_images())
    model = models["perchannel"]
    ref = _torch_logits(model, _images(), *IMAGENET)
    assert _rel_err(out, ref) > 3e-2
    model.align_corners = True
    try:
        assert _rel_err(out, _torch_logits(model, _images(), *IMAGENET)) <= 1e-3
    finally:
        model.align_corners = False


def test_dropped_input_bias_diverges(reference, export, tmp_path):
    src, _ = export("perchannel", "fp32")
    program = CoreMLReferenceProgram.load(_edited_copy(src, tmp_path / "nobias.mlpackage", _drop_input_bias))
    out = program.predict(_images())
    assert _rel_err(out, reference("perchannel", "fp32")[1]) > 0.1


def test_corrupted_weight_diverges(reference, export, models, tmp_path):
    src, _ = export("perchannel", "fp32")
    dst = tmp_path / "corrupt.mlpackage"
    shutil.copytree(src, dst)
    blob = bytearray((dst / WEIGHT_FILE).read_bytes())
    weight = models["perchannel"].head.weight.detach().numpy().astype("<f4")
    at = blob.find(weight.tobytes())
    assert at >= 0, "head weight not found in weight.bin"
    blob[at:at + weight.nbytes] = np.flip(weight).tobytes()
    (dst / WEIGHT_FILE).write_bytes(bytes(blob))
    out = CoreMLReferenceProgram.load(dst).predict(_images())
    assert _rel_err(out, reference("perchannel", "fp32")[1]) > 0.1


@pytest.mark.parametrize("new_type", ["sin", "frobnicate"])
def test_unknown_op_raises_artifact_error_naming_it(export, tmp_path, new_type):
    def retype(block):
        _ops(block, "relu")[0].type = new_type

    dst = _edited_copy(export("perchannel", "fp32")[0], tmp_path / "unknown.mlpackage", retype)
    with pytest.raises(ArtifactError, match=new_type):
        CoreMLReferenceProgram.load(dst)


def test_not_a_package_raises_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="not a Core ML"):
        CoreMLReferenceProgram.load(tmp_path)
    with pytest.raises(ArtifactError, match="not a Core ML"):
        read_coreml_info(tmp_path / "missing.mlpackage")


# ----------------------------------------------------------------------------- op semantics


def _ramp(n_out: int, **args):
    """Resample the 1-D ramp [0, 1] (Xin = 2): the output is the sampling grid itself."""
    x = np.array([0.0, 1.0], dtype=np.float32).reshape(1, 1, 1, 2)
    if "sampling_mode" in args:
        out = OPS["resize_bilinear"]({"x": x, "target_size_height": 1, "target_size_width": n_out, **args})
    else:
        out = OPS["upsample_bilinear"]({"x": x, "scale_factor_height": 1.0, "scale_factor_width": n_out / 2, **args})
    return pytest.approx(out.ravel().tolist(), abs=6e-3)


@pytest.mark.parametrize(
    "mode,grid5,grid6",
    [  # the grids printed in the MIL resize_bilinear documentation
        ("UNALIGN_CORNERS", [0, 0.1, 0.5, 0.9, 1], [0, 0, 0.33, 0.67, 1, 1]),
        ("STRICT_ALIGN_CORNERS", [0, 0.25, 0.5, 0.75, 1], [0, 0.2, 0.4, 0.6, 0.8, 1]),
        ("ALIGN_CORNERS", [0, 0.25, 0.5, 0.75, 1], [0, 0.2, 0.4, 0.6, 0.8, 1]),
        ("DEFAULT", [0, 0.4, 0.8, 1, 1], [0, 0.33, 0.67, 1, 1, 1]),
        ("OFFSET_CORNERS", [0.1, 0.3, 0.5, 0.7, 0.9], [0.08, 0.25, 0.42, 0.58, 0.75, 0.92]),
    ],
)
def test_resize_bilinear_sampling_modes(mode, grid5, grid6):
    assert _ramp(5, sampling_mode=mode) == grid5
    assert _ramp(6, sampling_mode=mode) == grid6


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(32, 48), (7, 5)])
def test_upsample_bilinear_matches_pytorch(align_corners, size):
    x = torch.randn(1, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    want = F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners).numpy()
    got = OPS["upsample_bilinear"]({
        "x": x.numpy(), "scale_factor_height": size[0] / 16 + 1e-5, "scale_factor_width": size[1] / 12 + 1e-5,
        "align_corners": align_corners,
    })
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_upsample_bilinear_half_pixel_flag():
    assert _ramp(5, align_corners=False) == [0, 0.1, 0.5, 0.9, 1]
    assert _ramp(5, align_corners=False, half_pixel_centers=False) == [0, 0.4, 0.8, 1, 1]
    with pytest.raises(ArtifactError, match="both true"):
        _ramp(5, align_corners=True, half_pixel_centers=True)


def test_lut_to_dense_ios16_bit_packing():
    # the MIL documentation's example: n_bits = 2, shape (5,), indices 0, 3, 2, 1, 3 packed LSB first
    packed = np.array([0b01_10_11_00, 0b00000011], dtype=np.uint8)
    lut = np.array([10.0, 11.0, 12.0, 13.0], dtype=np.float32)
    assert OPS["constexpr_lut_to_dense"]({"indices": packed, "lut": lut, "shape": [5]}).tolist() == [10, 13, 12, 11, 13]


def test_lut_to_dense_ios18_groups_and_vectors():
    # per-group scalar palettization, from the MIL documentation
    indices = np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3]).reshape(6, 2)
    lut = np.array([1.0, 5.0, 9.0, 13.0, 2.0, 10.0, 18.0, 26.0]).reshape(2, 1, 4, 1)
    assert OPS["constexpr_lut_to_dense"]({"indices": indices, "lut": lut}).tolist() == [
        [9, 13], [13, 1], [5, 1], [26, 2], [18, 10], [2, 26]]
    # 1-bit vector palettization over axis 2; centroids a = (0, 1, 2), b = (10, 11, 12)
    indices = np.array([[[0, 0], [1, 0]], [[1, 1], [0, 0]]])
    lut = np.array([0.0, 1, 2, 10, 11, 12]).reshape(1, 1, 1, 2, 3)
    dense = OPS["constexpr_lut_to_dense"]({"indices": indices, "lut": lut, "vector_axis": 2})
    assert dense[0].tolist() == [[0, 1, 2, 0, 1, 2], [10, 11, 12, 0, 1, 2]]
    assert dense[1].tolist() == [[10, 11, 12, 10, 11, 12], [0, 1, 2, 0, 1, 2]]


def test_dequantize_ops():
    q = np.arange(-4, 4, dtype=np.int8).reshape(2, 4)
    affine = OPS["constexpr_affine_dequantize"](
        {"quantized_data": q, "zero_point": np.int8(1), "scale": np.array([0.5, 2.0]), "axis": 0})
    assert affine.tolist() == [[-2.5, -2, -1.5, -1], [-2, 0, 2, 4]]
    blockwise = OPS["constexpr_blockwise_shift_scale"](
        {"data": q, "scale": np.array([[1.0, 10.0]]), "offset": np.array([[0, 1]], dtype=np.int8)})
    assert blockwise.tolist() == [[-4, -3, -30, -20], [0, 1, 10, 20]]


def test_avg_pool_matches_pytorch():
    x = torch.randn(1, 4, 9, 10, generator=torch.Generator().manual_seed(1))
    for exclude in (True, False):
        pool = OPS["avg_pool"]({"x": x.numpy(), "kernel_sizes": [3, 3], "strides": [2, 2], "pad_type": "custom",
                                "pad": [1, 1, 1, 1], "exclude_padding_from_average": exclude})
        want = F.avg_pool2d(x, 3, 2, 1, count_include_pad=not exclude).numpy()
        np.testing.assert_allclose(pool, want, atol=1e-6)
    with pytest.raises(ArtifactError, match="ceil_mode"):
        OPS["avg_pool"]({"x": x.numpy(), "kernel_sizes": [2, 2], "ceil_mode": True})


@pytest.mark.parametrize("kernel,dilation", [((3, 3), 2), ((4, 2), 1)])
@pytest.mark.parametrize("pad_type", ["same", "same_lower"])
def test_grouped_conv_same_padding_matches_pytorch(kernel, dilation, pad_type):
    x = torch.randn(1, 4, 9, 10, generator=torch.Generator().manual_seed(1))
    w = torch.randn(6, 2, *kernel, generator=torch.Generator().manual_seed(2))
    got = OPS["conv"]({"x": x.numpy(), "weight": w.numpy(), "groups": 2, "pad_type": pad_type,
                       "dilations": [dilation] * 2, "strides": [1, 1]})
    # "same" puts an odd padding's extra row/column at the end, "same_lower" at the start
    totals = [(k - 1) * dilation for k in kernel]
    pads = [(t // 2, t - t // 2) if pad_type == "same" else (t - t // 2, t // 2) for t in totals]
    padded = F.pad(x, (*pads[1], *pads[0]))
    np.testing.assert_allclose(got, F.conv2d(padded, w, groups=2, dilation=dilation).numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- Core ML itself


@pytest.mark.skipif(
    sys.platform != "darwin", reason="Core ML prediction needs macOS (coremltools cannot run models on Linux)"
)
@pytest.mark.parametrize("precision", COREML_PRECISIONS)
def test_coreml_predict_matches_reference(export, precision):
    from PIL import Image

    dest, _ = export("perchannel", precision)
    images = _images()
    model = ct.models.MLModel(str(dest), compute_units=ct.ComputeUnit.CPU_ONLY)
    native = np.concatenate([model.predict({"image": Image.fromarray(img)})["logits"] for img in images])
    ours = CoreMLReferenceProgram.load(dest).predict(images)
    assert _rel_err(native, ours) <= (5e-3 if precision == "fp32" else 2e-2)
    assert (native.argmax(1) == ours.argmax(1)).mean() >= 0.99


def test_one_model_is_traced_once_and_converted_once_per_compute_precision(models, export, tmp_path):
    """A cache shared across precisions (as the exporter does): fp32 and fp16 are converted, int8 compresses the
    fp16 program already converted; each package equals its stand-alone conversion and describes its own precision."""
    case = "perchannel"
    mean, std = CASES[case][1]
    cache = {}
    images = _images()
    for precision in ("int8", "fp16", "fp32"):  # int8 first: it converts the fp16 program that fp16 then reuses
        dest = tmp_path / f"{precision}.mlpackage"
        convert_coreml(models[case], height=SIZE, width=SIZE, mean=mean, std=std, labels=LABELS, precision=precision,
                       dest=dest, description=f"tiny {case} segmenter",
                       metadata={"recipe": "tiny.yaml", "epochs": 3, "classes": json.dumps(LABELS), "input_size": [64, 64]},
                       weight_threshold=WEIGHT_THRESHOLD, cache=cache)
        alone, _ = export(case, precision)
        np.testing.assert_array_equal(CoreMLReferenceProgram.load(dest).predict(images),
                                      CoreMLReferenceProgram.load(alone).predict(images))
        meta = read_coreml_info(dest)["metadata"]["user_defined"]
        assert meta["precision"] == precision and meta["quantized"] == read_coreml_info(alone)["metadata"]["user_defined"]["quantized"]
    assert set(cache) == {"exported", "FLOAT16", "FLOAT32"}


# ----------------------------------------------------------------------------- opening a file quietly

# What importing coremltools logs to stderr: its untested scikit-learn and torch versions, off macOS its missing
# native library, and torch's notice about torchao's Enum (that import loads torchao). Nothing a user can act on.
COREMLTOOLS_IMPORT_NOTICES = ("scikit-learn version", "has not been tested with coremltools", "Failed to load _ML",
                              "KernelPreference")


def test_opening_a_core_ml_file_prints_no_import_notices(tmp_path):
    """``edgeseg predict`` (``edgeseg.load`` underneath) and ``edgeseg inspect`` of a Core ML file, each in a fresh
    process: coremltools logs these on its first import only, which this module already did."""
    from PIL import Image

    from conftest import run_edgeseg
    from edgeseg.bench.latency_reference import ASSETS

    Image.fromarray(_images(1)[0]).save(tmp_path / "a.png")
    predict = run_edgeseg("predict", ASSETS, tmp_path / "a.png", "--out", tmp_path / "out", "--artifact", "coreml")
    inspect = run_edgeseg("inspect", next(ASSETS.glob("*.mlpackage")))
    for run in (predict, inspect):  # opening for prediction (the API's edgeseg.load too) and for inspection
        assert run.returncode == 0, run.stderr[-3000:]
        assert [line for line in run.stderr.splitlines() if any(n in line for n in COREMLTOOLS_IMPORT_NOTICES)] == []
