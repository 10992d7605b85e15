"""``edgeseg inspect FILE --quant-error``: where an int8 file loses accuracy, layer by layer (layer 4).

The int8 file and the float model it was quantized from run on the same images through the
quantizer's own debugging tools, which compare every tensor the two graphs share by name:

- ONNX: ``onnxruntime.quantization.qdq_loss_debug`` (``modify_model_output_intermediate_tensors``,
  ``collect_activations``, ``create_activation_matching``, ``compute_activation_error``,
  ``create_weight_matching``, ``compute_weight_error``; SQNR in dB). The float model is the
  export's fp32 .onnx run through ``quant_pre_process``: the very graph ``quantize_static`` was
  given, so every quantized tensor has its float twin.
- TFLite: ai-edge-quantizer's model validation (``Quantizer.validate``, i.e.
  ``model_validator.compare_model``, SNR per tensor). The float model is the export's fp32
  .tflite: as it is when it takes the same input as the int8 file (raw pixels; or normalized
  values, when one integer mean made the int8 input's quantization the normalization), else (one
  mean/std for all channels: the fp32 file takes normalized input, the int8 file has the
  normalization in its graph) with the normalization put in front, as export derived the graph
  it quantized. Only without an fp32 TFLite file is the float graph rebuilt from the checkpoint
  the manifest names (one litert-torch conversion).

Ranking. A layer's SQNR against the float model counts the error of every layer before it, so it
falls along the network and ranking by it would list the last layers. Each layer is ranked by the
SQNR it *loses*: its worst input's SQNR minus its output's (both capped at ``HARMLESS_DB``, so an
exact input does not make the first layer look worst). A damaged or badly calibrated layer loses
tens of dB; the layers after it inherit its error but lose little.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.compat import native_notices_dropped
from edgeseg.errors import ArtifactError, DataError, require
from edgeseg.manifest import MANIFEST_NAME, Artifact, Manifest, find_artifact_for_file

DEFAULT_COUNT = 8
# Above this SQNR the quantization noise is under 2% of the signal's amplitude and harms no prediction:
# higher values count as this when a layer's loss is computed, so that exact inputs and the near-exact
# first layers (which go from ~47 dB to ~38 dB in a healthy model) do not look like losses.
HARMLESS_DB = 35.0
# Per-channel int8 weights of a trained conv layer measure about 40-50 dB; far below that, int8
# cannot hold the layer's weights (outliers, or a damaged scale).
WEIGHT_SUSPECT_DB = 30.0
# A layer that loses this much doubles the error amplitude it was given; less is ordinary int8 noise.
NOTABLE_LOSS_DB = 6.0
TABLE_ROWS = 15


@dataclass(frozen=True)
class Op:
    """One op of the int8 graph: the layer it belongs to (module path or scope), its type and tensors."""

    layer: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class Measured:
    """What a quantizer's debugging tool measured on one int8 file, in terms of the int8 graph.

    ``activation_db`` and ``weight_db`` are keyed by any tensor name of the int8 graph (or of the float
    graph, when the tool reports float names); names joined by a quantizer op (``quantizer_ops``:
    QuantizeLinear, DEQUANTIZE...) are one tensor, quantized or not.
    """

    ops: list[Op]
    quantizer_ops: frozenset[str]
    activation_db: dict[str, float]
    weight_db: dict[str, float]
    outputs: list[str]
    tool: str
    reference: str


@dataclass
class QuantErrorReport:
    """Per-layer error of an int8 file against its float model, worst layer first."""

    file: str
    format: str
    tool: str
    reference: str
    images: int
    image_source: str
    tensors_compared: int
    output_sqnr_db: float | None
    metric: str
    layers: list[dict] = field(default_factory=list)
    hint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Entry point


def quant_error(path: str | Path, *, data_dir: str | Path | None = None, count: int = DEFAULT_COUNT) -> QuantErrorReport:
    """Compare an int8 file of an edgeseg export directory with its float model, layer by layer.

    ``data_dir``: a folder of images (resized like calibration images), else the built-in synthetic
    eval set; ``count`` images either way. Layers come worst first (see the module docstring).
    Raises ArtifactError / DataError / MissingExtra (exit 2) for a file that is not an int8 ONNX or
    TFLite file listed in its export's manifest.json, a missing float model, images that cannot be
    used, or a missing optional dependency; reads files only.
    """
    manifest, entry = _int8_entry(Path(path))
    measure = {"onnx": _measure_onnx, "tflite": _measure_tflite}[entry.format]
    images, source = _images(manifest, data_dir, count)
    with native_notices_dropped():  # LiteRT's delegate notice; what else native code says still shows
        measured = measure(manifest, entry, images)
    layers = rank_layers(measured)
    ops = sum(op.op_type not in measured.quantizer_ops for op in measured.ops)
    if len(layers) < ops / 2:  # tensor names differ: not the graph this file was quantized from
        raise ArtifactError(f"{entry.file}: {measured.tool} matched only {len(layers)} of its {ops} ops to "
                            f"{measured.reference}; re-export the fp32 and int8 files together with this edgeseg")
    return QuantErrorReport(
        file=str(entry.file), format=entry.format, tool=measured.tool, reference=measured.reference, images=len(images),
        image_source=source, tensors_compared=len(measured.activation_db) + len(measured.weight_db),
        output_sqnr_db=output_sqnr(measured),
        metric="sqnr_lost_db = worst input SQNR - output SQNR against the float model (dB, each capped at "
               f"{HARMLESS_DB} dB); layers ranked by it, largest first",
        layers=layers, hint=hint(layers, entry.format, other_calib_methods(entry.format, _calib_method(entry))))


def _calib_method(entry: Artifact) -> str:
    """The calibration method the int8 file was exported with (its manifest entry's record, else the default)."""
    from edgeseg.recipe import ExportCfg

    return entry.details.get("calibration") or ExportCfg.calib_method


def _int8_entry(path: Path) -> tuple[Manifest, Artifact]:
    """The manifest entry of an int8 ONNX/TFLite file (sha256 checked); ArtifactError naming the fix otherwise."""
    if not path.exists():
        raise ArtifactError(f"model file not found: {path}")
    if path.suffix == ".mlpackage":
        raise ArtifactError(f"{path}: --quant-error does not support Core ML: coremltools has no per-layer "
                            "quantization debugger, and its int8 file quantizes weights only (activations stay float); "
                            "run it on the int8 .onnx or .tflite file of the same export")
    if path.suffix not in (".onnx", ".tflite"):
        raise ArtifactError(f"{path}: --quant-error needs an int8 .onnx or .tflite file from edgeseg export")
    if not (path.parent / MANIFEST_NAME).is_file():
        raise ArtifactError(f"{path}: no {MANIFEST_NAME} beside it; --quant-error reads the model's input size, "
                            "normalization and float file from it: run it on the file inside the folder edgeseg export wrote")
    manifest, entry = find_artifact_for_file(path)
    entry.verified_file()
    if entry.precision != "int8":
        raise ArtifactError(f"{path}: is {entry.precision}, not int8; --quant-error compares an int8 file with its "
                            "float model: pass the export's int8 file (edgeseg export --precisions fp32,int8)")
    return manifest, entry


def _images(manifest: Manifest, data_dir, count: int) -> tuple[list[np.ndarray], str]:
    """uint8 HxWx3 images at the model's size: ``data_dir``'s (like calibration) or the built-in eval set."""
    from edgeseg.data.datasets import builtin_source
    from edgeseg.export.quant_images import images_in_folder

    size = (manifest.model["input"]["height"], manifest.model["input"]["width"])
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"--data {data_dir}: not a folder; it must be a folder of images")
        return images_in_folder(data_dir, count, size, option="--data", purpose="--quant-error"), str(data_dir)
    task = manifest.model.get("task") or "portrait"
    src = builtin_source("eval", task, count, size)
    return [src.get(i)[0] for i in range(count)], f"built-in synthetic {task} eval set"


# ---------------------------------------------------------------------------------------------
# Ranking (format-independent)


class _Sqnr:
    """SQNR per tensor of a measured graph, where names joined by a quantizer op (x -> QuantizeLinear ->
    DequantizeLinear -> x_dq, or int8 -> DEQUANTIZE -> float) are one tensor."""

    def __init__(self, measured: Measured):
        self._parent: dict[str, str] = {}
        for op in measured.ops:
            if op.op_type in measured.quantizer_ops and op.inputs:
                source = self._root(op.inputs[0])
                for root in {self._root(out) for out in op.outputs} - {source}:  # roots only: never a cycle
                    self._parent[root] = source
        self._activation = self._by_root(measured.activation_db)
        self._weight = self._by_root(measured.weight_db)

    def _root(self, name: str) -> str:
        while name in self._parent:
            name = self._parent[name]
        return name

    def _by_root(self, table: dict[str, float]) -> dict[str, float]:
        by_root: dict[str, float] = {}
        for name, db in table.items():
            root = self._root(name)
            by_root[root] = min(db, by_root.get(root, math.inf))
        return by_root

    def activations(self, tensors) -> list[float]:
        return [self._activation[r] for r in map(self._root, tensors) if r in self._activation]

    def weights(self, tensors) -> list[float]:
        return [self._weight[r] for r in map(self._root, tensors) if r in self._weight]


def rank_layers(measured: Measured) -> list[dict]:
    """One row per compute op whose output was measured, largest SQNR loss first (see module docstring)."""
    sqnr = _Sqnr(measured)
    rows = []
    for op in measured.ops:
        out = sqnr.activations(op.outputs)
        if op.op_type in measured.quantizer_ops or not out:
            continue
        s_in = min([min(v, HARMLESS_DB) for v in sqnr.activations(op.inputs)], default=HARMLESS_DB)
        weights = sqnr.weights(op.inputs)
        rows.append({"layer": op.layer, "op": op.op_type, "tensor": op.outputs[0],
                     "sqnr_lost_db": _round(s_in - min(min(out), HARMLESS_DB)), "sqnr_db": _round(min(out)),
                     "weight_sqnr_db": _round(min(weights)) if weights else None})
    _unique_layer_names(rows)
    rows.sort(key=lambda r: -r["sqnr_lost_db"])
    return [{"rank": i + 1, **r} for i, r in enumerate(rows)]


def _unique_layer_names(rows: list[dict]) -> None:
    """Number the rows of a layer that writes several measured tensors (an op and the ops fused after it, e.g. a
    squeeze-excite's MEAN and its MUL): the first keeps the layer's name, the next ones (in graph order) get #2, #3."""
    seen: dict[str, int] = {}
    for row in rows:
        seen[row["layer"]] = seen.get(row["layer"], 0) + 1
        if seen[row["layer"]] > 1:
            row["layer"] = f"{row['layer']}#{seen[row['layer']]}"


def output_sqnr(measured: Measured) -> float | None:
    """The model output's SQNR against the float model (dB), the worst output's when there are several."""
    out = _Sqnr(measured).activations(measured.outputs)
    return _round(min(out)) if out else None


def other_calib_methods(fmt: str, used: str) -> list[str]:
    """The calibration methods ``fmt``'s int8 export offers besides ``used`` (its exporter's ``calib_methods``)."""
    from edgeseg.export import onnx, tflite  # noqa: F401  (register the exporters)
    from edgeseg.export.base import EXPORTERS

    return [m for m in EXPORTERS[fmt].calib_methods if m != used]


def hint(layers: list[dict], fmt: str, other_methods: list[str]) -> str:
    """One line on what to do about the worst layer, naming only fixes edgeseg offers for ``fmt``'s int8 file
    (``other_methods``: the --calib-method choices it has besides the one used)."""
    if not layers:
        return ""
    top = layers[0]
    where = f"{top['layer']} ({top['op']})"
    methods = f" or with --calib-method {' or '.join(f'{fmt}={m}' for m in other_methods)}" if other_methods else ""
    recalibrate = f"calibrate on more or more varied images (edgeseg export --calib DIR --calib-count N){methods}"
    if top["sqnr_lost_db"] < NOTABLE_LOSS_DB:
        return (f"no layer stands out (the largest loss is {top['sqnr_lost_db']:.1f} dB, at {where}): the error builds up "
                f"over the whole network; {recalibrate}, or ship fp16 instead (--precisions fp16)")
    if top["weight_sqnr_db"] is not None and top["weight_sqnr_db"] < WEIGHT_SUSPECT_DB:
        return (f"{where} loses the most ({top['sqnr_lost_db']:.1f} dB) and its int8 weights are the cause (weight SQNR "
                f"{top['weight_sqnr_db']:.1f} dB): look for outlier weights in it (calibration images cannot help), "
                "or ship fp16 instead (--precisions fp16)")
    return (f"{where} loses the most ({top['sqnr_lost_db']:.1f} dB) while its weights quantize well: its activation range "
            f"is the likely cause; {recalibrate}, or ship fp16 instead (--precisions fp16)")


def _round(v: float) -> float:
    return round(float(v), 2)


# ---------------------------------------------------------------------------------------------
# ONNX: onnxruntime.quantization.qdq_loss_debug


def _measure_onnx(manifest: Manifest, entry: Artifact, images: list[np.ndarray]) -> Measured:
    onnx = require("onnx", "onnx", "--quant-error on ONNX files")
    qd = require("onnxruntime.quantization.qdq_loss_debug", "onnx", "--quant-error on ONNX files")
    from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeseg.runtime.base import float_input

    twin = manifest.find("onnx", "fp32")
    if twin is None:
        raise ArtifactError(f"{entry.file}: no float model to compare with: {manifest.root} has no fp32 ONNX file; "
                            "export fp32 too (edgeseg export --formats onnx --precisions fp32,int8)")
    fp32 = twin.verified_file()
    m = manifest.model
    feeds = [{entry.input["name"]: float_input(img[None], entry.input.get("expects", "normalized"), m["mean"], m["std"])
              .transpose(0, 3, 1, 2).copy()} for img in images]
    with tempfile.TemporaryDirectory() as tmp:
        pre, float_aug, int8_aug = (str(Path(tmp) / n) for n in ("pre.onnx", "float_aug.onnx", "int8_aug.onnx"))
        quant_pre_process(str(fp32), pre)  # the graph quantize_static was given: tensor names match the int8 file
        qd.modify_model_output_intermediate_tensors(pre, float_aug)
        qd.modify_model_output_intermediate_tensors(str(entry.file), int8_aug)
        matched = qd.create_activation_matching(qd.collect_activations(int8_aug, list(feeds)),
                                                qd.collect_activations(float_aug, list(feeds)))
        errors = qd.compute_activation_error({k: v for k, v in matched.items() if "float" in v})
        weights = qd.compute_weight_error(qd.create_weight_matching(pre, str(entry.file)))
    graph = onnx.load(str(entry.file)).graph
    scopes = _onnx_scopes(onnx.load(str(fp32)).graph)
    ops = [Op(_onnx_layer(n, scopes), n.op_type, tuple(n.input), tuple(n.output)) for n in graph.node]
    return Measured(ops=ops, quantizer_ops=frozenset({"QuantizeLinear", "DequantizeLinear"}),
                    activation_db={k: v["xmodel_err"] for k, v in errors.items()},
                    # keyed by the quantized initializer, which DequantizeLinear turns into what the op reads
                    weight_db={k + TENSOR_NAME_QUANT_SUFFIX: v for k, v in weights.items()},
                    outputs=[o.name for o in graph.output],
                    tool="onnxruntime.quantization.qdq_loss_debug", reference=f"{twin.path} (after quant_pre_process)")


def _onnx_scopes(graph) -> dict[str, str]:
    """Output tensor -> the module that produced it, from the torch dynamo exporter's node metadata."""
    scopes = {}
    for node in graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            names = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            continue
        if len(names) >= 2 and names[-2]:
            scopes.update(dict.fromkeys(node.output, names[-2]))
    return scopes


def _onnx_layer(node, scopes: dict[str, str]) -> str:
    """A weighted op's module path (its weight's name), else its exporter scope, else its node or tensor name."""
    for name in node.input:  # "<module>.weight_DequantizeLinear_Output"; "<module>.weight_bias" is a folded bias
        module, _, rest = name.rpartition(".weight")
        if module and not rest.startswith("_bias"):
            return module
    return next((scopes[o] for o in node.output if o in scopes), node.name or node.output[0])


# ---------------------------------------------------------------------------------------------
# TFLite: ai-edge-quantizer model validation


def _measure_tflite(manifest: Manifest, entry: Artifact, images: list[np.ndarray]) -> Measured:
    quantizer = require("ai_edge_quantizer.quantizer", "tflite", "--quant-error on TFLite files")
    validation = require("ai_edge_quantizer.utils.validation_utils", "tflite", "--quant-error on TFLite files")
    from edgeseg.export import tflite_convert as tc

    from edgeseg.runtime.base import normalize_nhwc

    int8 = entry.verified_file().read_bytes()
    pixels = _reads_pixels(int8)
    float_model, reference = _tflite_float_model(manifest, entry, pixels)
    signature, arg = tc._signature_input(float_model)
    m = manifest.model
    # Both models take the same real values: raw pixels, or normalized ones when the int8 input's quantization
    # is the normalization (the validator quantizes what it is given with the input's scale and zero point).
    data = {signature: [{arg: img[None].astype(np.float32) if pixels else normalize_nhwc(img[None], m["mean"], m["std"])}
                        for img in images]}
    snr = validation.ValidationErrorMetric.SNR
    with tc._preserve_all_tensors_warning_ignored():
        # reference kernels: XNNPACK does not write back the tensors inside its partitions
        result = quantizer.Quantizer(float_model, previous_quantized_model=int8).validate(
            data, error_metrics=[snr], use_xnnpack=False, num_threads=1).get_signature_comparison_result(signature)
    ops, quantized = _tflite_graph(int8)

    def db(tensors: dict) -> dict[str, float]:
        return {k: 10 * math.log10(max(v[snr.value], 1e-12)) for k, v in tensors.items()}

    activations = db({**result.input_tensors, **result.intermediate_tensors, **result.output_tensors})
    weights = {k: v for k, v in db(result.constant_tensors).items() if k in quantized}
    return Measured(ops=ops, quantizer_ops=frozenset({"QUANTIZE", "DEQUANTIZE"}), activation_db=activations,
                    weight_db=weights, outputs=list(result.output_tensors),
                    tool="ai_edge_quantizer Quantizer.validate (model_validator.compare_model, SNR)", reference=reference)


def _reads_pixels(int8: bytes) -> bool:
    """Whether the int8 file's input values are raw pixels (scale 1, zero point 0), not normalized ones
    (a normalization folded into its quantization, ``runtime.base.folds_into_uint8_input``)."""
    from edgeseg.export.tflite_flatbuffer import io_details

    return io_details(int8)[0][0].get("quantization") == {"scale": 1.0, "zero_point": 0}


def _tflite_float_model(manifest: Manifest, entry: Artifact, pixels: bool) -> tuple[bytes, str]:
    """The float .tflite the int8 file was quantized from, taking raw pixels when ``pixels`` and normalized
    values otherwise, and what it is (see the module docstring)."""
    from edgeseg.export.tflite_flatbuffer import prepend_input_normalization

    twin = manifest.find("tflite", "fp32")
    if twin is not None:
        data = twin.verified_file().read_bytes()
        if (twin.input.get("expects") == "pixels") == pixels:
            return data, twin.path
        m = manifest.model
        return (prepend_input_normalization(data, m["mean"], m["std"]),
                f"{twin.path} with the input normalization in front, as export quantized it")
    ckpt = manifest.model.get("checkpoint") if isinstance(manifest.model.get("checkpoint"), dict) else {}
    path = next((p for p in manifest.checkpoint_paths() if p.is_file()), None)
    if path is None:
        raise ArtifactError(f"{entry.file}: no float model to compare with: {manifest.root} has no fp32 TFLite file, "
                            f"and the checkpoint to rebuild the float graph from is not available at "
                            f"{ckpt.get('path') or '(not recorded)'}; export fp32 too (edgeseg export --formats tflite "
                            f"--precisions fp32,int8) or put the checkpoint back")
    m = manifest.model
    rebuilt = _rebuild_float_tflite(str(path), ckpt.get("sha256"), tuple(m["mean"]), tuple(m["std"]),
                                    m["input"]["height"], m["input"]["width"], pixels)
    return rebuilt, f"float graph rebuilt from {path} ({manifest.root} has no fp32 TFLite file)"


@functools.lru_cache(maxsize=2)  # one conversion per checkpoint and process (~20 s for a tiny model)
def _rebuild_float_tflite(path: str, sha256: str | None, mean: tuple, std: tuple, height: int, width: int,
                          pixels: bool = True) -> bytes:
    """The float graph export quantized: the checkpoint's model converted, with the normalization put in front
    when it takes ``pixels``."""
    torch = require("torch", "tflite", "--quant-error on TFLite files")
    require("litert_torch", "tflite", "--quant-error on TFLite files")
    from edgeseg.export import tflite_convert as tc
    from edgeseg.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if sha256 and ckpt.sha256 != sha256:
        raise ArtifactError(f"{path}: changed since the export (sha256 {ckpt.sha256[:12]}... is not the manifest's "
                            f"{sha256[:12]}...); restore the checkpoint the files were exported from, or re-export")
    with contextlib.redirect_stdout(sys.stderr):  # litert-torch prints its progress; stdout may carry JSON
        return tc.float_graph(torch, ckpt.model(), height, width,
                              normalization=(list(mean), list(std)) if pixels else None)


def _tflite_graph(model: bytes) -> tuple[list[Op], set[str]]:
    """The ops of a .tflite (layer = its output tensor's scope), and the names of its quantized tensors."""
    litert = require("ai_edge_litert.interpreter", "tflite", "--quant-error on TFLite files")
    interp = litert.Interpreter(model_content=model)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    name = {i: t["name"] for i, t in tensors.items()}
    quantized = {t["name"] for t in tensors.values() if len(t["quantization_parameters"]["scales"])}
    ops = [Op(_tflite_layer(name.get(op["outputs"][0], "")) if len(op["outputs"]) else op["op_name"], op["op_name"],
              tuple(name[i] for i in op["inputs"] if i in name), tuple(name[i] for i in op["outputs"] if i in name))
           for op in interp._get_ops_details()]
    return ops, quantized


def _tflite_layer(tensor: str) -> str:
    """litert-torch names a tensor by the module scopes that made it, ";"-joined ("pkg.Class_attr/.../pkg.ReLU_2;
    .../pkg.BatchNorm2d_1;.../pkg.Conv2d_0;<scopes of its input>"): the first scope, the module whose output the op
    writes (the later ones are the modules fused into it and, after them, whatever made its input), without the
    export wrappers, each module as its attribute name, or as Class_index inside a container
    ("decoder/UpBlock_3/dw_skip/ReLU_2")."""
    scopes = [s for s in tensor.split(";") if "/" in s]
    if not scopes:
        return tensor
    segments = [s.rsplit(".", 1)[-1] for s in scopes[0].split("/")[1:]]  # [0]: litert-torch's NHWC wrapper
    while len(segments) > 1 and segments[0].rsplit("_", 1)[-1] in ("wrapped", "model"):
        segments.pop(0)
    named = [seg.split("_", 1) for seg in segments]
    return "/".join(seg if len(parts) < 2 or parts[1].isdigit() else parts[1] for seg, parts in zip(segments, named))


# ---------------------------------------------------------------------------------------------
# Output


def print_quant_error(report: dict) -> None:
    """The ranking as a rich table (worst first, ``TABLE_ROWS`` rows), with the hint below it."""
    from edgeseg.ui import console, print_table

    out = report["output_sqnr_db"]
    console.print(f"[bold]{report['file']}[/] vs {report['reference']}: {report['images']} images "
                  f"({report['image_source']}), {report['tensors_compared']} tensors compared by {report['tool']}"
                  + (f"; model output SQNR {out:.1f} dB" if out is not None else ""))
    layers = report["layers"]

    def db(v):
        return "" if v is None else f"{v:.1f}"

    # TFLite tensor names are the scope paths the layer column already shows; ONNX ones are short graph names
    tensor = ["tensor"] if report["format"] == "onnx" else []
    print_table("quantization error per layer, worst first",
                ["#", "layer", "op", "SQNR lost dB", "SQNR dB", "weight SQNR dB", *tensor],
                [[r["rank"], r["layer"], r["op"], db(r["sqnr_lost_db"]), db(r["sqnr_db"]), db(r["weight_sqnr_db"]),
                  *[_cut(r["tensor"], 40)][:len(tensor)]] for r in layers[:TABLE_ROWS]])
    more = f"; {len(layers) - TABLE_ROWS} more layers with --json FILE" if len(layers) > TABLE_ROWS else ""
    console.print(f"SQNR lost = worst input SQNR - output SQNR, each against the float model{more}")
    console.print(f"hint: {report['hint']}")


def _cut(text: str, limit: int) -> str:
    """``text``, with its middle cut out when it is longer than ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]}...{text[-(limit // 2 - 1):]}"
