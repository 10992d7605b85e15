"""ExecuTorch export: a .pte program lowered to XNNPACK, fp32 and int8 (layer 4)."""
from __future__ import annotations

from edgeseg.errors import require
from edgeseg.export.base import ExportJob, artifact_for, check_precision, register_exporter
from edgeseg.export.executorch_convert import EXECUTORCH_CALIB_METHODS, EXECUTORCH_PRECISIONS
from edgeseg.fsutil import write_bytes_atomic
from edgeseg.manifest import Artifact


@register_exporter("executorch")
class ExecuTorchExporter:
    format = "executorch"
    precisions = EXECUTORCH_PRECISIONS
    extra = "executorch"
    calib_methods = tuple(EXECUTORCH_CALIB_METHODS)

    def export(self, job: ExportJob) -> Artifact:
        check_precision(self, job.precision)
        require("executorch", "executorch", "ExecuTorch export")
        from edgeseg.export.executorch_convert import convert_executorch

        h, w = job.info.input_size
        result = convert_executorch(job.model, height=h, width=w, precision=job.precision, mean=job.info.mean,
                                    std=job.info.std, calib_images=job.calib, calib_method=job.calib_method)
        write_bytes_atomic(job.out_dir / f"{job.stem}.pte", result.data)
        details = {"delegation": result.delegation, "metadata": "in manifest.json (a .pte carries no metadata)"}
        if job.precision == "int8":
            details.update(calibration=job.calib_method, calibration_images=len(job.calib))
        return artifact_for(job, "executorch", input=dict(result.input), output=dict(result.output),
                            quantized=result.quantized, details=details)
