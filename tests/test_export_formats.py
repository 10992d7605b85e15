"""Each format x precision through ``edgeseg export``, loaded by its real client.

ONNX files run in onnxruntime and TFLite files in the LiteRT interpreter (the export's own
parity gate); TFLite files also run in MediaPipe Tasks ImageSegmenter; Core ML packages are
read back with coremltools and executed by the Linux reference interpreter.
"""
from __future__ import annotations

import numpy as np
import pytest

FORMATS = ("onnx", "tflite", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def full_export(shared_export):
    """The session's export of the tiny checkpoint (every format x precision, through ``edgeseg export``
    in a subprocess; int8 threshold relaxed for a 40-step model, see conftest.SHARED_EXPORT_ARGS)."""
    return shared_export.manifest


def test_nine_artifacts_all_pass_parity(full_export):
    got = {(a.format, a.precision) for a in full_export.artifacts}
    assert got == {(f, p) for f in FORMATS for p in PRECISIONS}
    for a in full_export.artifacts:
        assert a.parity["passed"] is True, (a.path, a.parity)
        assert a.file.exists() and a.bytes > 0
    runtimes = {a.format: a.parity["runtime"] for a in full_export.artifacts}
    assert runtimes["onnx"] == "onnxruntime" and runtimes["tflite"] == "litert"
    assert runtimes["coreml"] in ("coreml", "coreml-reference")


def test_sizes_shrink_with_precision(full_export):
    for fmt in FORMATS:
        size = {a.precision: a.bytes for a in full_export.artifacts if a.format == fmt}
        assert size["int8"] < size["fp16"] < size["fp32"], (fmt, size)


def test_onnx_file_contract(full_export):
    import onnx

    for a in (x for x in full_export.artifacts if x.format == "onnx"):
        m = onnx.load(str(a.file))
        onnx.checker.check_model(m)
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 18
        assert [i.name for i in m.graph.input] == ["image"] and [o.name for o in m.graph.output] == ["logits"]
        assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O at every precision
        meta = {p.key: p.value for p in m.metadata_props}
        assert {"classes", "mean", "std", "input_size", "edgeseg_version"} <= set(meta)


def test_tflite_files_are_nhwc_and_int8_takes_uint8_pixels(full_export):
    for a in (x for x in full_export.artifacts if x.format == "tflite"):
        assert a.input["shape"] == [1, 64, 64, 3] and a.input["layout"] == "NHWC"
        assert a.output["shape"] == [1, 64, 64, 2] and a.output["layout"] == "NHWC"
        if a.precision == "int8":
            assert a.input["dtype"] == "uint8" and a.input["expects"] == "pixels"
            assert a.output["dtype"] == "float32"


def test_int8_tflite_runs_in_one_xnnpack_partition(full_export):
    a = full_export.find("tflite", "int8")
    # Every op is in one partition: the camera pixels reach int8 through a DEQUANTIZE + QUANTIZE
    # that XNNPACK runs (a uint8 -> int8 QUANTIZE it would leave to the CPU kernels), and HARD_SWISH
    # is kept float where int8 would split the graph.
    assert a.details["xnnpack_partitions"] == 1
    assert a.details["ops_not_delegated"] == []


def test_tflite_files_run_in_mediapipe_image_segmenter(full_export):
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options
    import mediapipe as mp

    from edgeseg.data.datasets import builtin_source
    from edgeseg.runtime.loader import runner_for_artifact

    images = [builtin_source("eval", "portrait", 3, (64, 64)).get(i)[0] for i in range(3)]
    for a in (x for x in full_export.artifacts if x.format == "tflite"):
        ours = runner_for_artifact(a, full_export)
        opts = vision.ImageSegmenterOptions(base_options=base_options.BaseOptions(model_asset_path=str(a.file)),
                                            output_category_mask=True, output_confidence_masks=True)
        with vision.ImageSegmenter.create_from_options(opts) as seg:
            for img in images:
                r = seg.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
                mask = r.category_mask.numpy_view().copy().squeeze()
                expected = ours.run(img[None])[0].argmax(0)
                # int8: MediaPipe's kernels may round one quantization step differently where the
                # two logits tie; float files must match exactly.
                assert (mask == expected).mean() >= (0.98 if a.precision == "int8" else 0.999), a.path
                conf = np.stack([c.numpy_view().copy().squeeze() for c in r.confidence_masks])
                assert np.allclose(conf.sum(0), 1.0, atol=1e-3)  # SOFTMAX activation from the metadata


def test_coreml_packages_have_image_input_and_float_output(full_export):
    from edgeseg.export.coreml_convert import read_coreml_info

    for a in (x for x in full_export.artifacts if x.format == "coreml"):
        info = read_coreml_info(a.file)
        inp, out = info["inputs"][0], info["outputs"][0]
        assert inp["kind"] == "imageType" and inp["color"] == "RGB" and out["dtype"] == "FLOAT32"
        assert info["metadata"]["user_defined"]["classes"]
        assert a.input["expects"] == "pixels"
