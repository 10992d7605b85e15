"""Export a segmenter to a Core ML ML Program (``.mlpackage``) with an image input.

The package takes an RGB image (``ImageType``) and returns float32 logits [1, C, H, W]. The
model's input normalization ``(pixel - mean) / std`` is reproduced exactly: Core ML's ImageType
offers one scale for all channels plus a per-channel bias, so when the three std differ the
per-channel part of ``1 / std`` is folded into the graph as a multiply in front of the model.

Precisions: ``fp32`` and ``fp16`` set the compute precision; ``int8`` (linear symmetric
per-channel weights) and ``pal6`` (6-bit k-means palettized weights) compress the weights of an
fp16-compute program. Tensors with at most ``weight_threshold`` elements stay uncompressed.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgeseg import __version__
from edgeseg.compat import import_coremltools
from edgeseg.errors import EdgesegError, require
from edgeseg.fsutil import atomic_path

COREML_PRECISIONS = ("fp32", "fp16", "int8", "pal6")
COREML_TARGETS = ("iOS16", "iOS17", "iOS18")
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
_SPEC_VERSION_TARGETS = {7: "iOS16", 8: "iOS17", 9: "iOS18"}


@dataclass(frozen=True)
class CoreMLResult:
    """What convert_coreml wrote: input/output contracts and how the weights were compressed."""

    input: dict  # name, shape [1,3,H,W], dtype "uint8", layout "NCHW", expects "pixels", color "RGB", scale, bias
    output: dict  # name, shape [1,C,H,W], dtype "float32", layout "NCHW"
    quantized: str


def _linear_int8(mlmodel, threshold: int):
    cto = require("coremltools.optimize.coreml", "coreml", "int8 Core ML export")
    op_config = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=threshold
    )
    return cto.linear_quantize_weights(mlmodel, config=cto.OptimizationConfig(global_config=op_config))


def _palettize6(mlmodel, threshold: int):
    cto = require("coremltools.optimize.coreml", "coreml", "palettized Core ML export")
    require("sklearn", "coreml", "k-means palettization")
    op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=6, granularity="per_tensor", weight_threshold=threshold)
    return cto.palettize_weights(mlmodel, config=cto.OptimizationConfig(global_config=op_config))


@dataclass(frozen=True)
class _Precision:
    compute: str  # name in ct.precision
    quantized: str
    compress: Callable[[Any, int], Any] | None = None


_PRECISIONS = {
    "fp32": _Precision("FLOAT32", "none"),
    "fp16": _Precision("FLOAT16", "compute fp16"),
    "int8": _Precision("FLOAT16", "weights int8 linear symmetric per-channel", _linear_int8),
    "pal6": _Precision("FLOAT16", "weights palettized 6-bit kmeans", _palettize6),
}


def image_normalization(mean: Sequence[float], std: Sequence[float]) -> tuple[float, list[float], list[float] | None]:
    """Split ``(pixel - mean) / std`` into ImageType ``scale``, ``bias`` and in-graph factors.

    Returns ``(scale, bias, factors)`` such that ``factors[c] * (scale * pixel + bias[c])`` equals
    the normalized value; ``factors`` is None when all std are equal (the ImageType alone does it).
    """
    mean = [float(m) for m in mean]
    std = [float(s) for s in std]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise EdgesegError(f"mean and std need 3 values each with std > 0, got mean={mean} std={std}")
    # One common divisor for the ImageType; with equal std it is the std itself.
    common = std[0] if len(set(std)) == 1 else sum(std) / 3
    factors = None if len(set(std)) == 1 else [common / s for s in std]
    return 1.0 / common, [-m / common for m in mean], factors


def _channel_scaled(model, factors: list[float]):
    torch = require("torch", "coreml")

    class ChannelScaled(torch.nn.Module):
        """Multiplies each input channel by a constant factor, then runs ``model``."""

        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("factors", torch.tensor(factors, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x):
            return self.model(x * self.factors)

    return ChannelScaled().eval()


def _metadata_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _merge_metadata(facts: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, str]:
    """``facts`` plus the caller's entries as strings; an entry may repeat a fact, not contradict it."""
    merged = {key: _metadata_value(value) for key, value in facts.items()}
    for key, value in extra.items():
        text = _metadata_value(value)
        if key in merged and _decoded(text) != _decoded(merged[key]):
            raise EdgesegError(f"metadata {key!r}={text} contradicts the Core ML export's own value {merged[key]}")
        merged.setdefault(key, text)
    return merged


def convert_coreml(
    model,
    *,
    height: int,
    width: int,
    mean: Sequence[float],
    std: Sequence[float],
    labels: Sequence[str],
    precision: str,
    dest: Path,
    description: str,
    metadata: Mapping[str, Any] | None,
    minimum_target: str = "iOS16",
    weight_threshold: int = 2048,
    cache: dict | None = None,
) -> CoreMLResult:
    """Convert ``model`` to an ML Program written atomically at ``dest`` (a ``.mlpackage``).

    ``model`` is an eval-mode torch module mapping a normalized float32 [1,3,H,W] image to
    logits [1,C,H,W]; ``mean``/``std`` are per channel in 0-255 pixel units. The package takes
    an RGB ImageType whose scale/bias (plus an in-graph multiply when std differ) reproduce the
    normalization exactly, returns float32 ``logits``, targets ``minimum_target`` (iOS16+), and
    carries labels and normalization in its metadata (``metadata`` entries are added; one that
    repeats a fact such as ``classes`` must agree with it). ``weight_threshold``: int8/pal6 leave
    weight tensors with at most this many elements uncompressed. Raises EdgesegError for an unknown
    precision or target, bad normalization, a label count that does not match the model's
    channels, or a ``dest`` that is not a ``.mlpackage`` path; ``dest`` is untouched on failure.

    ``cache``: a dict kept by the caller for one model (same model, size, normalization and target)
    across precisions: the model is traced once, converted once per compute precision, and int8 /
    pal6 compress the fp16-compute program already converted.
    """
    _check_choice(precision, minimum_target, dest)
    scale, bias, factors = image_normalization(mean, std)
    spec = _PRECISIONS[precision]
    facts = {
        "classes": list(labels),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "input_size": [height, width],
        "precision": precision,
        "quantized": spec.quantized,
        "weight_threshold": weight_threshold,
    }
    user_metadata = _merge_metadata(facts, metadata or {})
    import_coremltools("Core ML export")
    if model.training:
        raise EdgesegError("convert_coreml needs the model in eval mode (call model.eval())")
    net = model if factors is None else _channel_scaled(model, factors)
    classes = _checked_classes(net, height, width, labels)
    cache = {} if cache is None else cache
    mlmodel = _converted(net, cache, height=height, width=width, scale=scale, bias=bias, compute=spec.compute,
                         minimum_target=minimum_target)
    if spec.compress is not None:
        mlmodel = spec.compress(mlmodel, weight_threshold)  # a new model: the cached one is left as it was
    _describe(mlmodel, description, user_metadata, facts, classes, labels, height, width)
    with atomic_path(dest, is_dir=True) as tmp:
        mlmodel.save(str(tmp))
    return CoreMLResult(
        input={"name": INPUT_NAME, "shape": [1, 3, height, width], "dtype": "uint8", "layout": "NCHW",
               "expects": "pixels", "color": "RGB", "scale": scale, "bias": bias},
        output={"name": OUTPUT_NAME, "shape": [1, classes, height, width], "dtype": "float32", "layout": "NCHW"},
        quantized=spec.quantized,
    )


def _check_choice(precision: str, minimum_target: str, dest: Path) -> None:
    """EdgesegError for an unknown precision or target, or a destination that is not a .mlpackage."""
    if precision not in _PRECISIONS:
        raise EdgesegError(
            f"Core ML precision {precision!r} is not supported; choose one of {', '.join(COREML_PRECISIONS)}"
        )
    if minimum_target not in COREML_TARGETS:
        raise EdgesegError(
            f"Core ML target {minimum_target!r} is not supported; choose one of {', '.join(COREML_TARGETS)}"
        )
    if Path(dest).suffix != ".mlpackage":
        raise EdgesegError(f"Core ML destination {dest} must end in .mlpackage")


def _checked_classes(net, height: int, width: int, labels: Sequence[str]) -> int:
    """The model's class count from one dry run; EdgesegError when its logits or the labels do not fit."""
    torch = require("torch", "coreml")
    with torch.no_grad():
        logits = net(torch.zeros(1, 3, height, width))
    classes = int(logits.shape[1])
    if tuple(logits.shape) != (1, classes, height, width):
        raise EdgesegError(f"model returned logits {list(logits.shape)}; expected [1, C, {height}, {width}]")
    if len(labels) != classes:
        raise EdgesegError(f"{len(labels)} labels given but the model has {classes} output channels")
    return classes


def _converted(net, cache: dict, *, height: int, width: int, scale: float, bias: list[float], compute: str,
               minimum_target: str):
    """The ML Program of ``net`` at ``compute`` precision, from ``cache`` when this model was converted at it
    before; the traced (``torch.export``) program is cached too, so each model is traced once."""
    if compute in cache:
        return cache[compute]
    ct = import_coremltools("Core ML export")
    torch = require("torch", "coreml")
    if "exported" not in cache:
        cache["exported"] = torch.export.export(net, (torch.zeros(1, 3, height, width),)).run_decompositions({})
    cache[compute] = ct.convert(
        cache["exported"],
        inputs=[ct.ImageType(name=INPUT_NAME, shape=(1, 3, height, width), scale=scale, bias=bias,
                             color_layout=ct.colorlayout.RGB)],
        outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, minimum_target),
        compute_precision=getattr(ct.precision, compute),
    )
    return cache[compute]


def _describe(mlmodel, description: str, user_metadata: dict, facts: dict, classes: int, labels, height: int,
              width: int) -> None:
    """Set the package's description, author, version, metadata and input/output descriptions."""
    mlmodel.short_description = description
    mlmodel.author = "edgeseg"
    mlmodel.version = __version__
    for key, text in user_metadata.items():
        mlmodel.user_defined_metadata[key] = text
    mlmodel.input_description[INPUT_NAME] = (
        f"RGB image {height}x{width}; the model normalizes (pixel - mean) / std itself, "
        f"mean={facts['mean']} std={facts['std']}"
    )
    mlmodel.output_description[OUTPUT_NAME] = (
        f"float32 logits [1, {classes}, {height}, {width}]; argmax over axis 1 is the class index in {list(labels)}"
    )


def _feature_info(feature, fts) -> dict:
    kind = feature.type.WhichOneof("Type")
    info: dict[str, Any] = {"name": feature.name, "kind": kind, "description": feature.shortDescription}
    if kind == "imageType":
        image = feature.type.imageType
        color = fts.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        channels = 1 if color.startswith("GRAYSCALE") else 3
        info.update(height=image.height, width=image.width, color=color,
                    shape=[1, channels, image.height, image.width], dtype="uint8")
    elif kind == "multiArrayType":
        array = feature.type.multiArrayType
        info.update(shape=list(array.shape), dtype=fts.ArrayFeatureType.ArrayDataType.Name(array.dataType))
    return info


def read_coreml_info(path: str | Path) -> dict:
    """Describe a Core ML package without running it (works on Linux).

    Returns inputs/outputs (name, kind, shape, dtype, image size and color, description), the
    image scale/bias as the program applies them, the minimum target, model metadata, the
    number of conv/linear weight and bias elements (``params``) and a histogram of the
    program's op types. Raises ArtifactError for an unreadable package.
    """
    from edgeseg.runtime.coreml_reference import image_scale_bias, load_program

    fts = require("coremltools.proto.FeatureTypes_pb2", "coreml", "reading a Core ML package")
    spec, function = load_program(path)
    meta = spec.description.metadata
    inputs = [_feature_info(f, fts) for f in spec.description.input]
    for info in inputs:
        if info["kind"] == "imageType":
            info.update(image_scale_bias(function, info["name"]))
    return {
        "path": str(path),
        "spec_version": spec.specificationVersion,
        "minimum_target": _SPEC_VERSION_TARGETS.get(spec.specificationVersion, f"spec v{spec.specificationVersion}"),
        "opset": spec.mlProgram.functions["main"].opset,
        "inputs": inputs,
        "outputs": [_feature_info(f, fts) for f in spec.description.output],
        "metadata": {
            "short_description": meta.shortDescription,
            "author": meta.author,
            "version": meta.versionString,
            "license": meta.license,
            "user_defined": dict(meta.userDefined),
        },
        "params": sum(
            math.prod(op.inputs[name].shape)
            for op in function.operations if op.op_type in ("conv", "conv_transpose", "linear")
            for name in ("weight", "bias") if name in op.inputs
        ),
        "ops": dict(sorted(Counter(op.op_type for op in function.operations).items())),
    }
