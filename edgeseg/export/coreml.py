"""Core ML export: mlprogram .mlpackage with an RGB ImageType input (layer 4)."""
from __future__ import annotations

from edgeseg.compat import import_coremltools
from edgeseg.export.base import ExportJob, PerModelCache, artifact_for, check_precision, register_exporter
from edgeseg.manifest import Artifact


@register_exporter("coreml")
class CoreMLExporter:
    format = "coreml"
    precisions = ("fp32", "fp16", "int8", "pal6")
    extra = "coreml"
    calib_methods = ()  # int8 and pal6 compress weights only: nothing is calibrated on images

    def __init__(self):
        self._converted = PerModelCache()  # the traced program and converted ML Programs, reused across precisions

    def export(self, job: ExportJob) -> Artifact:
        check_precision(self, job.precision)
        import_coremltools("Core ML export")
        from edgeseg.export.coreml_convert import convert_coreml

        h, w = job.info.input_size
        dest = job.out_dir / f"{job.stem}.mlpackage"
        result = convert_coreml(job.model, height=h, width=w, mean=list(job.info.mean), std=list(job.info.std),
                                labels=list(job.info.classes), precision=job.precision, dest=dest,
                                description=f"edgeseg {job.info.arch} segmenter ({job.precision})", metadata=job.metadata,
                                cache=self._converted.of(job.model))
        return artifact_for(job, "coreml", input=dict(result.input), output=dict(result.output), quantized=result.quantized,
                            details={"minimum_deployment_target": "iOS16"})
