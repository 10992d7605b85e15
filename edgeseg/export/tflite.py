"""TFLite export via litert-torch, NHWC I/O, MediaPipe ImageSegmenter metadata (layer 4)."""
from __future__ import annotations

from edgeseg.errors import require
from edgeseg.export.base import ExportJob, PerModelCache, artifact_for, check_precision, register_exporter
from edgeseg.export.tflite_convert import TFLITE_CALIB_METHODS
from edgeseg.fsutil import write_bytes_atomic
from edgeseg.manifest import Artifact


@register_exporter("tflite")
class TFLiteExporter:
    format = "tflite"
    precisions = ("fp32", "fp16", "int8")
    extra = "tflite"
    calib_methods = tuple(TFLITE_CALIB_METHODS)

    def __init__(self):
        self._float = PerModelCache()  # the converted float graphs, reused across precisions

    def export(self, job: ExportJob) -> Artifact:
        check_precision(self, job.precision)
        require("litert_torch", "tflite", "TFLite export")
        require("ai_edge_quantizer", "tflite", "TFLite export")
        require("mediapipe", "tflite", "TFLite metadata for MediaPipe")
        from edgeseg.export.tflite_convert import convert_tflite

        h, w = job.info.input_size
        result = convert_tflite(job.model, height=h, width=w, mean=list(job.info.mean), std=list(job.info.std),
                                labels=list(job.info.classes), precision=job.precision, calib_images=job.calib,
                                calib_method=job.calib_method, name=job.info.name, float_cache=self._float.of(job.model),
                                description=f"edgeseg {job.info.arch} segmenter ({job.precision})")
        write_bytes_atomic(job.out_dir / f"{job.stem}.tflite", result.data)
        details = {"xnnpack_partitions": result.xnnpack_partitions, "ops_not_delegated": list(result.ops_not_delegated),
                   "metadata": "MediaPipe ImageSegmenter (labels, normalization, softmax activation)"}
        if job.precision == "int8":
            details.update(calibration=job.calib_method, calibration_library=TFLITE_CALIB_METHODS[job.calib_method],
                           calibration_images=len(job.calib))
        return artifact_for(job, "tflite", input=dict(result.input), output=dict(result.output),
                            quantized=result.quantized, details=details)
