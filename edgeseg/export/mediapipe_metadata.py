"""MediaPipe Tasks metadata for segmentation .tflite files: write it, read it back.

Writing goes through MediaPipe's maintained metadata writer
(``mediapipe.tasks.python.metadata.metadata_writers``), so the files load in
``mediapipe.tasks.python.vision.ImageSegmenter`` and the Android/iOS Tasks libraries.
Reading only parses the metadata flatbuffer and the label file packed after the model.

What MediaPipe Tasks (1.2.3) accepts, and so what ``add_segmenter_metadata`` enforces:
- a float32 input is fed ``(pixel - mean) / std`` with a single mean/std for all channels;
  per-channel values that differ are rejected when the model is loaded ("Per-channel image
  normalization is not available"), so they must be applied inside the graph instead;
- a uint8 input is fed raw pixels and the normalization metadata is ignored, so the only
  truthful values are mean 0, std 1.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import io
import sys
import types
import zipfile

from edgeseg.errors import ArtifactError, EdgesegError, require
from edgeseg.export.tflite_flatbuffer import inline_buffers, io_details

ACTIVATIONS = ("softmax", "sigmoid", "none")
_METADATA_NAME = b"TFLITE_METADATA"
_SEGMENTER_OPTIONS_NAME = "SEGMENTER_METADATA"
_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
_WHY = "writing MediaPipe metadata"
LABEL_FILE_DATE = (1980, 1, 1, 0, 0, 0)  # the zip format's first date: what reproducible builds stamp files with


def add_segmenter_metadata(model: bytes, *, mean: list[float], std: list[float], labels: list[str],
                           activation: str = "softmax", name: str, description: str) -> bytes:
    """Return ``model`` with MediaPipe ImageSegmenter metadata attached.

    ``mean``/``std`` (1 or 3 values, 0-255 pixel units) say how MediaPipe turns pixels into
    the float input: ``(pixel - mean) / std``. ``labels`` name the output channels, in order.
    ``activation`` (softmax, sigmoid or none) tells MediaPipe how to turn the outputs into
    confidence masks. Buffers stored after the flatbuffer are inlined first, so nothing is
    lost. Raises ``EdgesegError`` for values MediaPipe would reject or ignore.
    """
    model = inline_buffers(model)
    _check_request(model, mean, std, labels, activation)
    image_segmenter, metadata_writer = _writer_modules()
    writer = (
        # `image_segmenter.MetadataWriter.create` hard-codes the model name and description,
        # so the same pieces are assembled here with the writer's public chained API.
        metadata_writer.MetadataWriter.create(bytearray(model))
        .add_general_info(name, description)
        .add_image_input([float(v) for v in mean], [float(v) for v in std])
        .add_custom_metadata(image_segmenter.ImageSegmenterOptionsMd(image_segmenter.Activation[activation.upper()]))
        .add_segmentation_output(labels=metadata_writer.Labels().add(list(labels)))
    )
    data, _json = image_segmenter.MetadataWriter(writer).populate()
    return _dated_label_files(bytes(data))


def _dated_label_files(model: bytes) -> bytes:
    """``model`` with the files MediaPipe's writer zipped after it (labels.txt) dated ``LABEL_FILE_DATE``:
    its ``zipfile.writestr`` stamps them with the time of the export, so identical inputs gave files that
    differed in those bytes. Same members, order and compression; only the dates change."""
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    start = min(info.header_offset for info, _ in members)
    out = io.BytesIO(model[:start])
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:  # appended after the model, as MediaPipe's writer does
        for info, content in members:
            dated = copy.copy(info)
            dated.date_time = LABEL_FILE_DATE
            archive.writestr(dated, content)
    return out.getvalue()


def read_segmenter_metadata(model: bytes) -> dict | None:
    """Return the segmenter metadata of ``model``, or None if it has no MediaPipe metadata.

    The dict has ``name``, ``description``, ``labels`` (list, [] if no label file),
    ``mean`` and ``std`` (lists, [] if no normalization) and ``activation`` (``"softmax"``,
    ``"sigmoid"``, ``"none"``, or None if unset).
    """
    fb = require("ai_edge_litert.schema_py_generated", "tflite", "reading .tflite metadata")
    md_fb = require("mediapipe.tasks.metadata.metadata_schema_py_generated", "tflite", "reading MediaPipe metadata")
    model = bytes(model)
    if len(model) < 8 or not fb.Model.ModelBufferHasIdentifier(model, 0):
        raise ArtifactError("not a TFLite model (missing the 'TFL3' flatbuffer identifier)")
    tflite = fb.Model.GetRootAs(model, 0)
    buffer_index = next((tflite.Metadata(i).Buffer() for i in range(tflite.MetadataLength())
                         if tflite.Metadata(i).Name() == _METADATA_NAME), None)
    if buffer_index is None:
        return None
    buffer = tflite.Buffers(buffer_index)
    if buffer.Offset() > 1:
        raw = model[buffer.Offset():buffer.Offset() + buffer.Size()]
    else:
        raw = buffer.DataAsNumpy().tobytes()
    meta = md_fb.ModelMetadataT.InitFromObj(md_fb.ModelMetadata.GetRootAs(raw, 0))
    subgraph = meta.subgraphMetadata[0]
    mean, std = _normalization(subgraph.inputTensorMetadata[0], md_fb)
    return {
        "name": _text(meta.name),
        "description": _text(meta.description),
        "labels": _labels(model, subgraph.outputTensorMetadata[-1], md_fb),
        "mean": mean,
        "std": std,
        "activation": _activation(subgraph),
    }


def _check_request(model: bytes, mean, std, labels, activation) -> None:
    if activation not in ACTIVATIONS:
        raise EdgesegError(f"activation '{activation}' is not one of {', '.join(ACTIVATIONS)}")
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise EdgesegError(f"mean and std need 1 or 3 values each, got {len(mean)} and {len(std)}")
    if any(float(s) == 0.0 for s in std):
        raise EdgesegError(f"std values must be non-zero, got {list(std)}")
    if not labels or any(not str(label).strip() or "\n" in str(label) for label in labels):
        raise EdgesegError(f"labels must be non-empty single-line names, got {list(labels)}")
    inputs, outputs = io_details(model)
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgesegError(f"a segmenter has one input and one output; model has {len(inputs)} and {len(outputs)}")
    image, dtype = inputs[0], inputs[0]["dtype"]
    if dtype not in ("float32", "uint8") or len(image["shape"]) != 4 or image["shape"][-1] != 3:
        raise EdgesegError(f"MediaPipe Tasks needs a uint8 or float32 NHWC RGB image input; "
                           f"input '{image['name']}' is {dtype} {image['shape']}")
    channels = outputs[0]["shape"][-1]
    if channels != len(labels):
        raise EdgesegError(f"{len(labels)} labels for an output with {channels} channels (shape {outputs[0]['shape']})")
    if dtype == "float32" and len(set(map(float, mean))) * len(set(map(float, std))) != 1:
        raise EdgesegError("MediaPipe Tasks rejects per-channel mean/std for float input; "
                           f"normalize inside the graph instead (mean={list(mean)}, std={list(std)})")
    if dtype == "uint8" and (set(map(float, mean)) != {0.0} or set(map(float, std)) != {1.0}):
        raise EdgesegError("uint8 input takes raw pixels, so mean must be 0 and std 1 "
                           f"(got mean={list(mean)}, std={list(std)})")


def _writer_modules():
    with _metadata_version_shim():
        image_segmenter = require("mediapipe.tasks.python.metadata.metadata_writers.image_segmenter", "tflite", _WHY)
        metadata_writer = require("mediapipe.tasks.python.metadata.metadata_writers.metadata_writer", "tflite", _WHY)
    return image_segmenter, metadata_writer


@contextlib.contextmanager
def _metadata_version_shim():
    """Make MediaPipe's metadata writer importable while the block runs.

    The mediapipe 1.2.3 wheel ships ``mediapipe/tasks/python/metadata/metadata.py`` but not
    the compiled ``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`` it imports,
    whose only function computes the metadata's ``min_parser_version``. A stand-in module is
    placed in ``sys.modules`` for the duration of the import and removed afterwards; the
    imported writer keeps its own reference to it. Nothing is installed when the real module
    exists.
    """
    try:
        importlib.import_module(_VERSION_MODULE)
    except ImportError:
        pass
    else:
        yield
        return
    stand_in = types.ModuleType(_VERSION_MODULE)
    stand_in.GetMinimumMetadataParserVersion = _minimum_parser_version
    parents = [_VERSION_MODULE.rsplit(".", n)[0] for n in (3, 2, 1)]
    added = [n for n in parents if n not in sys.modules]
    for package in added:
        sys.modules[package] = types.ModuleType(package)
    sys.modules[_VERSION_MODULE] = stand_in
    added.append(_VERSION_MODULE)
    try:
        yield
    finally:
        for module_name in added:
            sys.modules.pop(module_name, None)


def _minimum_parser_version(metadata_buffer: bytes) -> str:
    """Stand-in for the compiled version check, for what the segmenter writer emits.

    Those files use the 1.0.0 metadata schema plus ``SubGraphMetadata.custom_metadata``
    (the activation), which the metadata schema added in 1.5.0.
    """
    md_fb = require("mediapipe.tasks.metadata.metadata_schema_py_generated", "tflite", _WHY)
    meta = md_fb.ModelMetadata.GetRootAs(bytes(metadata_buffer), 0)
    has_custom = any(meta.SubgraphMetadata(i).CustomMetadataLength() > 0 for i in range(meta.SubgraphMetadataLength()))
    return "1.5.0" if has_custom else "1.0.0"


def _normalization(tensor_md, md_fb) -> tuple[list[float], list[float]]:
    for unit in tensor_md.processUnits or []:
        if unit.optionsType == md_fb.ProcessUnitOptions.NormalizationOptions:
            return [float(v) for v in unit.options.mean], [float(v) for v in unit.options.std]
    return [], []


def _labels(model: bytes, tensor_md, md_fb) -> list[str]:
    label_files = [f for f in tensor_md.associatedFiles or [] if f.type == md_fb.AssociatedFileType.TENSOR_AXIS_LABELS]
    if not label_files:
        return []
    name = _text(label_files[0].name)
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return archive.read(name).decode("utf-8").splitlines()
    except (zipfile.BadZipFile, KeyError):
        raise ArtifactError(f"metadata names label file '{name}' but it is not packed in the model") from None


def _activation(subgraph_md) -> str | None:
    options_fb = require("mediapipe.tasks.metadata.image_segmenter_metadata_schema_py_generated", "tflite", _WHY)
    for custom in subgraph_md.customMetadata or []:
        if _text(custom.name) == _SEGMENTER_OPTIONS_NAME:
            options = options_fb.ImageSegmenterOptions.GetRootAs(bytes(bytearray(custom.data)), 0)
            names = {v: k.lower() for k, v in vars(options_fb.Activation).items() if not k.startswith("_")}
            return names.get(options.Activation())
    return None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")
