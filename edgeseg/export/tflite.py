"""TFLite export via litert-torch, NHWC I/O, MediaPipe ImageSegmenter metadata (layer 4)."""
from __future__ import annotations

from edgeseg.errors import require
from edgeseg.export.base import ExportJob, artifact_for, check_precision, register_exporter
from edgeseg.fsutil import write_bytes_atomic
from edgeseg.manifest import Artifact


@register_exporter("tflite")
class TFLiteExporter:
    format = "tflite"
    precisions = ("fp32", "fp16", "int8")
    extra = "tflite"

    def export(self, job: ExportJob) -> Artifact:
        check_precision(self, job.precision)
        require("litert_torch", "tflite", "TFLite export")
        require("ai_edge_quantizer", "tflite", "TFLite export")
        require("mediapipe", "tflite", "TFLite metadata for MediaPipe")
        from edgeseg.export.tflite_convert import convert_tflite

        h, w = job.info.input_size
        result = convert_tflite(job.model, height=h, width=w, mean=list(job.info.mean), std=list(job.info.std),
                                labels=list(job.info.classes), precision=job.precision, calib_images=job.calib,
                                name=job.info.name, description=f"edgeseg {job.info.arch} segmenter ({job.precision})")
        write_bytes_atomic(job.out_dir / f"{job.stem}.tflite", result.data)
        details = {"xnnpack_partitions": result.xnnpack_partitions, "ops_not_delegated": list(result.ops_not_delegated),
                   "metadata": "MediaPipe ImageSegmenter (labels, normalization, softmax activation)"}
        return artifact_for(job, "tflite", input=dict(result.input), output=dict(result.output),
                            quantized=result.quantized, details=details)
