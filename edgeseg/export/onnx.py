"""ONNX export: dynamo exporter (opset 18), fp16 via ORT's converter, int8 static QDQ (layer 4).

Input ``image``: float32 NCHW normalized ((pixel - mean) / std); output ``logits`` NCHW.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgeseg import __version__
from edgeseg.errors import EdgesegError, require
from edgeseg.export.base import ExportJob, artifact_for, check_precision, embedded_metadata, register_exporter
from edgeseg.fsutil import atomic_path
from edgeseg.manifest import Artifact
from edgeseg.runtime.base import normalize_nhwc, normalized_range

OPSET = 18

# --calib-method name -> (onnxruntime CalibrationMethod, the calibrator's options). ORT's Entropy defaults
# (128 bins, 128 quantized bins) leave no threshold to search and give exactly the MinMax ranges (measured on
# all 83 tensors of a segmenter), and quantize_static cannot pass num_bins, so the calibrator is built here.
# Distribution is left out: it is meant for float8 (its int8 range is the whole histogram, not a choice).
CALIB_METHODS = {
    "minmax": ("MinMax", {}),
    "entropy": ("Entropy", {"num_bins": 2048, "num_quantized_bins": 128}),
    "percentile": ("Percentile", {"num_bins": 2048, "percentile": 99.999}),
}


def _export_fp32(job: ExportJob, dest: Path) -> None:
    require("onnxscript", "onnx", "ONNX export")
    h, w = job.info.input_size
    x = torch.zeros(1, 3, h, w)
    torch.onnx.export(job.model.eval(), (x,), str(dest), input_names=["image"], output_names=["logits"],
                      opset_version=OPSET, dynamo=True, external_data=False, verbose=False)


def _set_metadata(model, meta: dict) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, str(v)


class _CalibReader:
    """onnxruntime CalibrationDataReader over normalized NCHW calibration images."""

    def __init__(self, images: list[np.ndarray], mean, std):
        self._it = iter([{"image": normalize_nhwc(img[None], mean, std).transpose(0, 3, 1, 2).copy()} for img in images])

    def get_next(self):
        return next(self._it, None)


def _quantize_int8(fp32_path: Path, dest: Path, job: ExportJob) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, create_calibrator, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not job.calib:
        raise EdgesegError("ONNX int8 export needs calibration images (--calib DIR or the built-in set)")
    if job.calib_method not in CALIB_METHODS:
        raise EdgesegError(f"ONNX int8 calibration method {job.calib_method!r} is not offered; "
                           f"choose one of {', '.join(CALIB_METHODS)}")
    method, options = CALIB_METHODS[job.calib_method]
    pre, ranges = dest.with_name("pre.onnx"), dest.with_name("ranges.json")
    quant_pre_process(str(fp32_path), str(pre))
    # The ranges are computed here (with the options quantize_static cannot pass) and handed to it as its
    # calibration cache; the op types are the ones quantize_static itself calibrates by default.
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
        calibrator = create_calibrator(pre, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                       augmented_model_path=str(dest.with_name("augmented.onnx")),
                                       calibrate_method=CalibrationMethod[method], extra_options=options)
        calibrator.collect_data(_CalibReader(job.calib, job.info.mean, job.info.std))
        save_tensors_data(calibrator.compute_data(), ranges)
    # The input's range covers every pixel value, not just the calibration images' (those clipped bright
    # pixels: the default model's range ended at 2.04 of a possible 2.64, i.e. blue > 220).
    low, high = normalized_range(job.info.mean, job.info.std)
    overrides = {"image": [{"rmin": np.array(low, np.float32), "rmax": np.array(high, np.float32)}]}
    quantize_static(str(pre), str(dest), None, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod[method], calibration_cache_path=str(ranges),
                    extra_options={"TensorQuantOverrides": overrides})


@register_exporter("onnx")
class OnnxExporter:
    format = "onnx"
    precisions = ("fp32", "fp16", "int8")
    extra = "onnx"
    calib_methods = tuple(CALIB_METHODS)

    def __init__(self):
        self._fp32: tuple[int, bytes] | None = None  # (id(model), exported fp32 graph), reused across precisions

    def _fp32_bytes(self, job: ExportJob) -> bytes:
        if self._fp32 is None or self._fp32[0] != id(job.model):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "fp32.onnx"
                _export_fp32(job, path)
                self._fp32 = (id(job.model), path.read_bytes())
        return self._fp32[1]

    def export(self, job: ExportJob) -> Artifact:
        check_precision(self, job.precision)
        onnx = require("onnx", "onnx", "ONNX export")
        require("onnxruntime", "onnx", "ONNX export")
        dest = job.out_dir / f"{job.stem}.onnx"
        quantized = {"fp32": "nothing", "fp16": "weights and activations float16 (float32 I/O)",
                     "int8": "static QDQ: weights int8 per-channel (symmetric), activations uint8 "
                             f"(U8S8, {job.calib_method} calibration)"}[job.precision]
        with tempfile.TemporaryDirectory(dir=job.out_dir) as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            fp32.write_bytes(self._fp32_bytes(job))
            if job.precision == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16

                from onnxruntime.transformers.onnx_model import OnnxModel

                model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
                OnnxModel(model).topological_sort()  # the converter appends its input Casts last
            elif job.precision == "int8":
                q = Path(tmp) / "int8.onnx"
                _quantize_int8(fp32, q, job)
                model = onnx.load(str(q))
            else:
                model = onnx.load(str(fp32))
            _set_metadata(model, {**embedded_metadata(job.info, __version__), "input_expects": "normalized",
                                  "precision": job.precision, **job.metadata})
            onnx.checker.check_model(model)
            with atomic_path(dest) as tmp_dest:
                onnx.save(model, str(tmp_dest))
        h, w = job.info.input_size
        c = job.info.num_classes
        details = {"opset": OPSET}
        if job.precision == "int8":
            method, options = CALIB_METHODS[job.calib_method]
            details.update(activation_type="uint8", weight_type="int8", per_channel=True, calibration=job.calib_method,
                           calibration_library=f"onnxruntime CalibrationMethod.{method}", calibration_options=options,
                           calibration_images=len(job.calib), reason="U8S8 runs ~2.5x faster than S8S8 on x86 ORT")
        return artifact_for(job, "onnx", quantized=quantized, details=details,
                            input={"name": "image", "shape": [1, 3, h, w], "dtype": "float32", "layout": "NCHW", "expects": "normalized"},
                            output={"name": "logits", "shape": [1, c, h, w], "dtype": "float32", "layout": "NCHW"})
