"""``edgeseg inspect`` on real exported files, read by the real runtimes (no mocks).

The session's shared tiny 64x64 export (ONNX, TFLite and Core ML at fp32, fp16 and int8): every file
is inspected through the CLI. A second, bare .tflite is built here with an int8 HARD_SWISH,
which XNNPACK has no int8 kernel for, to show that the delegate coverage is measured from the
file (the graph splits into two XNNPACK partitions) rather than assumed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.manifest import file_digest, read_manifest

from conftest import assert_refused, copy_export, one_line_error, prefetched, run_edgeseg

FORMATS = ("onnx", "tflite", "coreml")
PRECISIONS = ("fp32", "int8")
LABELS = ["background", "person"]


@pytest.fixture(scope="module")
def exported(shared_export):
    """The session's shared tiny export (every format at fp32, fp16 and int8; read-only)."""
    return shared_export.manifest


def inspect_json(cli, path) -> dict:
    res = cli("inspect", path, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # stdout only: library warnings may go to stderr


def size_and_sha256(path: Path) -> tuple[int, str]:
    """Measured independently of edgeseg.manifest.file_digest: a file, or every file of a folder."""
    if path.is_file():
        data = path.read_bytes()
        return len(data), hashlib.sha256(data).hexdigest()
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()), ""


# ---------------------------------------------------------------------------------------------
# Every exported file


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_inspect_json_describes_exported_file(cli, exported, fmt, precision):
    artifact = exported.find(fmt, precision)
    info = inspect_json(cli, artifact.file)

    assert info["format"] == fmt
    assert info["file"] == str(artifact.file)
    size, sha = size_and_sha256(artifact.file)
    assert info["bytes"] == size == artifact.bytes
    if sha:
        assert info["sha256"] == sha

    # I/O: one image in, one logits tensor out, with names, shapes and dtypes.
    assert len(info["inputs"]) == 1 and len(info["outputs"]) == 1
    for t in info["inputs"] + info["outputs"]:
        assert t["name"] and t["dtype"] and all(isinstance(d, int) and d > 0 for d in t["shape"]), t
    inp, out = info["inputs"][0], info["outputs"][0]
    if fmt == "tflite":  # NHWC
        assert inp["shape"] == [1, 64, 64, 3] and out["shape"] == [1, 64, 64, 2]
        assert out["dtype"] == "float32"
        if precision == "int8":  # raw uint8 pixels in: scale 1, zero point 0
            assert inp["dtype"] == "uint8" and inp["quantization"] == {"scale": 1.0, "zero_point": 0}
        else:
            assert inp["dtype"] == "float32" and "quantization" not in inp
    else:  # NCHW
        assert inp["shape"] == [1, 3, 64, 64] and out["shape"] == [1, 2, 64, 64]
    if fmt == "onnx":
        assert inp["name"] == "image" and out["name"] == "logits"
        assert inp["dtype"] == out["dtype"] == "float32"
    if fmt == "coreml":
        assert inp["kind"] == "imageType" and inp["color"] == "RGB" and (inp["height"], inp["width"]) == (64, 64)
        assert out["name"] == "logits"

    # Op histogram, parameters, MACs.
    assert info["ops"] and all(isinstance(n, int) and n > 0 for n in info["ops"].values()), info["ops"]
    conv = {"onnx": "Conv", "tflite": "CONV_2D", "coreml": "conv"}[fmt]
    assert info["ops"].get(conv, 0) > 0, info["ops"]
    assert isinstance(info["params"], int) and info["params"] > 0
    assert info["macs"] == exported.model["macs"] and info["macs"] > 0

    # Precision and parity come from the manifest next to the file.
    assert info["manifest"]["precision"] == precision
    assert info["manifest"]["quantized"] == artifact.quantized
    assert info["manifest"]["parity"]["passed"] is True


def test_params_agree_across_formats(cli, exported):
    """The float files hold the same weights: ONNX and TFLite count the same constants (+-1%)."""
    onnx_params = inspect_json(cli, exported.find("onnx", "fp32").file)["params"]
    tflite_params = inspect_json(cli, exported.find("tflite", "fp32").file)["params"]
    assert abs(onnx_params - tflite_params) <= 0.01 * onnx_params, (onnx_params, tflite_params)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tflite_metadata_and_xnnpack_coverage(cli, exported, precision):
    artifact = exported.find("tflite", precision)
    info = inspect_json(cli, artifact.file)
    assert info["mediapipe_metadata"] is True
    assert info["metadata"]["labels"] == LABELS
    assert info["metadata"]["activation"] == "softmax"
    xnn = info["delegate_coverage"]["xnnpack"]
    assert xnn["partitions"] == 1
    # Measured by inspect from the file alone, it matches what export measured at conversion time.
    assert xnn["partitions"] == artifact.details["xnnpack_partitions"]
    assert xnn["ops_not_delegated"] == artifact.details["ops_not_delegated"]
    assert xnn["ops_not_delegated"] == []
    if precision == "int8":  # the camera pixels reach int8 through a DEQUANTIZE + QUANTIZE, inside XNNPACK too
        assert info["ops"].get("QUANTIZE", 0) >= 1 and info["ops"].get("DEQUANTIZE", 0) >= 2


@pytest.mark.parametrize("precision", PRECISIONS)
def test_onnx_metadata_and_mobile_ep_partitions(cli, exported, precision):
    import onnx

    artifact = exported.find("onnx", precision)
    info = inspect_json(cli, artifact.file)
    assert info["opset"] >= 18
    meta = info["metadata"]
    assert json.loads(meta["classes"]) == LABELS
    assert meta["precision"] == precision
    assert {"mean", "std", "input_size"} <= set(meta)

    nodes = len(onnx.load(str(artifact.file)).graph.node)
    assert sum(info["ops"].values()) == nodes
    cov = info["delegate_coverage"]
    assert set(cov) == {"nnapi", "coreml_mlprogram"}
    for ep, c in cov.items():
        assert c["nodes"] == nodes, (ep, c)
        assert 0 <= c["supported_nodes"] <= c["nodes"], (ep, c)
        assert isinstance(c["partitions"], int) and c["partitions"] >= (1 if c["supported_nodes"] else 0), (ep, c)
        assert isinstance(c["unsupported_ops"], list)
        # Every op is either supported or named as unsupported, as "domain:OpType".
        assert (c["supported_nodes"] < c["nodes"]) == bool(c["unsupported_ops"]), (ep, c)
        for op in c["unsupported_ops"]:
            assert op.split(":")[-1] in info["ops"], (ep, op)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_coreml_metadata_and_op_list(cli, exported, precision):
    info = inspect_json(cli, exported.find("coreml", precision).file)
    user = info["metadata"]["user_defined"]
    assert json.loads(user["classes"]) == LABELS
    assert user["precision"] == precision
    assert info["metadata"]["short_description"]
    assert info["minimum_target"] and info["opset"]
    assert "coreml" in info["delegate_coverage"]
    assert {"conv"} <= set(info["ops"])


# ---------------------------------------------------------------------------------------------
# Delegate coverage is measured: an int8 op XNNPACK cannot run splits the graph


class _ConvHardswishConv:
    """Conv 3->8 (3x3) -> Hardswish -> Conv 8->2 (1x1): 216+8 + 16+2 = 242 parameters."""

    PARAMS = 3 * 3 * 3 * 8 + 8 + 8 * 2 + 2

    @staticmethod
    def build(torch):
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
                self.act = torch.nn.Hardswish()
                self.b = torch.nn.Conv2d(8, 2, 1)

            def forward(self, x):
                return self.b(self.act(self.a(x)))

        torch.manual_seed(0)
        return M().eval()


def test_int8_hardswish_splits_xnnpack_partitions(cli, tmp_path):
    """A full-int8 HARD_SWISH (not kept float) has no XNNPACK kernel: inspect measures 2 partitions."""
    import torch

    from edgeseg.export import tflite_convert as tc

    h = w = 16
    float_tflite = tc._to_nhwc_tflite(torch, _ConvHardswishConv.build(torch), h, w)
    rng = np.random.default_rng(0)
    batches = tc._calibration_batches([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)], h, w)
    qsvs = tc._calibrate(float_tflite, batches)

    # Every op in int8, HARD_SWISH included; a bare file: no manifest, no MediaPipe metadata.
    bare = tmp_path / "bare" / "hardswish_int8.tflite"
    bare.parent.mkdir()
    bare.write_bytes(tc._quantize_int8(float_tflite, qsvs, keep_float=()))
    info = inspect_json(cli, bare)
    assert sorted(p.name for p in bare.parent.iterdir()) == ["hardswish_int8.tflite"]
    assert info["ops"].get("HARD_SWISH") == 1 and info["ops"].get("CONV_2D") == 2, info["ops"]
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["shape"] == [1, h, w, 3]
    assert info["params"] == _ConvHardswishConv.PARAMS
    assert info["bytes"] == bare.stat().st_size
    assert info["mediapipe_metadata"] is False and info["metadata"] == {}
    assert "manifest" not in info and "macs" not in info
    xnn = info["delegate_coverage"]["xnnpack"]
    assert xnn["partitions"] > 1, xnn
    assert "HARD_SWISH" in xnn["ops_not_delegated"], xnn

    # Control: the same graph through export's int8 path (HARD_SWISH kept float) is one partition.
    whole = tmp_path / "hardswish_kept_float.tflite"
    whole.write_bytes(tc._full_int8(float_tflite, batches)[0])
    xnn = inspect_json(cli, whole)["delegate_coverage"]["xnnpack"]
    assert xnn["partitions"] == 1 and "HARD_SWISH" not in xnn["ops_not_delegated"], xnn


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line


def _onnx_cut_after_graph(src: Path) -> bytes:
    """``src`` truncated at a protobuf field boundary (after the graph): it still parses."""
    import onnx

    data = src.read_bytes()
    model = onnx.load_from_string(data)
    model.ClearField("opset_import")
    model.ClearField("metadata_props")
    cut = model.SerializeToString()
    assert len(cut) < len(data) and data.startswith(cut)  # a real prefix of the file
    return cut


BAD_FILES = {
    "missing.tflite": (None, "not found"),
    "truncated.tflite": (lambda exp: exp.find("tflite", "fp32").file.read_bytes()[:1000], "LiteRT cannot load it"),
    "empty.tflite": (lambda exp: b"", "LiteRT cannot load it"),
    "garbage.onnx": (lambda exp: b"this is not an onnx model\n" * 10, "not a readable ONNX file"),
    "truncated.onnx": (lambda exp: exp.find("onnx", "fp32").file.read_bytes()[:3000], "not a readable ONNX file"),
    "empty.onnx": (lambda exp: b"", "not a complete ONNX model"),
    "cut_after_graph.onnx": (lambda exp: _onnx_cut_after_graph(exp.find("onnx", "fp32").file),
                             "not a complete ONNX model"),
    "model.pt": (lambda exp: exp.find("onnx", "fp32").file.read_bytes(), "unknown model type"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_bad_file_is_one_line_exit_2(cli, exported, tmp_path, name, as_json):
    make, expected = BAD_FILES[name]
    path = tmp_path / name
    if make is not None:
        path.write_bytes(make(exported))
    res = cli("inspect", path, *(["--json"] if as_json else []))
    assert res.exit_code == 2, res.output
    line = one_line_error(res.output)
    assert expected in line and name in line, line
    assert res.stdout == ""  # no partial description


def test_broken_mlpackage_is_one_line_exit_2(cli, tmp_path):
    pkg = tmp_path / "broken.mlpackage"
    pkg.mkdir()
    (pkg / "Data").write_text("not a model")
    res = cli("inspect", pkg, "--json")
    assert res.exit_code == 2, res.output
    assert "broken.mlpackage" in one_line_error(res.output)


@pytest.mark.parametrize("manifest", ["[]", '{"artifacts": [{"file": 1}], "model": []}', "{not json", ""])
def test_unrelated_manifest_beside_file_is_ignored(cli, exported, tmp_path, manifest):
    """A manifest.json that is not edgeseg's does not stop the file itself being described."""
    src = exported.find("tflite", "fp32").file
    shutil.copy(src, tmp_path / src.name)
    (tmp_path / "manifest.json").write_text(manifest)
    info = inspect_json(cli, tmp_path / src.name)
    assert info["delegate_coverage"]["xnnpack"]["partitions"] == 1
    assert "manifest" not in info


# ---------------------------------------------------------------------------------------------
# Human-readable output


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_output_shows_tensors_ops_and_delegate_coverage(cli, exported, fmt):
    artifact = exported.find(fmt, "int8")
    res = cli("inspect", artifact.file)
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert artifact.file.name in text and f"({fmt}," in text
    for word in ("tensors", "input", "output", "shape", "dtype", "ops", "metadata", "delegate coverage", "manifest:"):
        assert word in text, (word, text)
    assert artifact.input["name"] in text and artifact.output["name"] in text
    assert "M MACs" in text and "params" in text
    if fmt == "tflite":
        assert '"partitions": 1' in text and "person" in text
    if fmt == "onnx":
        assert '"nnapi"' in text and '"coreml_mlprogram"' in text


# ---------------------------------------------------------------------------------------------
# Integrity: a file is described only when it is the one its manifest lists; reading changes nothing


def file_states(root: Path) -> dict:
    """Every file under ``root``: relative path -> (sha256, mtime in ns)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def export_copy(exported, tmp_path) -> Path:
    """A copy of the module's export, safe to change."""
    dest = tmp_path / "exp"
    shutil.copytree(exported.root, dest)
    return dest


@pytest.mark.parametrize("fmt", FORMATS)
def test_swapped_fp32_and_int8_files_are_refused(cli, export_copy, fmt):
    """Each file is a valid model, but not the one the manifest describes: inspect used to report the wrong precision."""
    suffix = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}[fmt]
    fp32, int8, tmp = (export_copy / f"tiny-{p}{suffix}" for p in ("fp32", "int8", "tmp"))
    fp32.rename(tmp)
    int8.rename(fp32)
    tmp.rename(int8)
    for path in (fp32, int8):
        line = assert_refused(cli, "inspect", path, "--json", watch=[export_copy], match=f"{path}: sha256")
        assert "does not match" in line and "re-export" in line


def test_reading_an_mlpackage_never_modifies_it(cli, export_copy, tmp_path):
    """inspect and the Core ML runner read a copy: coremltools rewrites Manifest.json of what it opens.

    The package's Manifest.json is first written compactly (same content; the manifest's sha256
    updated), so that a rewrite would change its bytes, not only its mtime.
    """
    from edgeseg.runtime.loader import runner_for_artifact

    pkg = export_copy / "tiny-fp32.mlpackage"
    inner = pkg / "Manifest.json"
    inner.write_text(json.dumps(json.loads(inner.read_text()), separators=(",", ":")))
    raw = json.loads((export_copy / "manifest.json").read_text())
    next(a for a in raw["artifacts"] if a["path"] == pkg.name)["sha256"] = file_digest(pkg)[1]
    (export_copy / "manifest.json").write_text(json.dumps(raw))

    # the check has teeth: coremltools opening the package itself rewrites it
    ct = pytest.importorskip("coremltools")
    control = tmp_path / "control.mlpackage"
    shutil.copytree(pkg, control)
    before = file_states(control)
    ct.models.MLModel(str(control), skip_model_load=True)
    assert file_states(control)["Manifest.json"][0] != before["Manifest.json"][0]

    before = file_states(export_copy)
    assert inspect_json(cli, pkg)["format"] == "coreml"
    manifest = read_manifest(export_copy)
    with runner_for_artifact(manifest.find("coreml", "fp32"), manifest) as runner:
        assert runner.run(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 2, 64, 64)
    assert file_states(export_copy) == before


# ---------------------------------------------------------------------------------------------
# --quant-error: per-layer error through the quantizers' own debugging tools; a damaged layer comes first


def relist(export_dir: Path, file: Path, **entry) -> None:
    """Record ``file``'s new bytes (and any other ``entry`` fields) in the export's manifest.json."""
    raw = json.loads((export_dir / "manifest.json").read_text())
    listed = next(a for a in raw["artifacts"] if a["path"] == file.name)
    listed.update(sha256=hashlib.sha256(file.read_bytes()).hexdigest(), bytes=file.stat().st_size, **entry)
    (export_dir / "manifest.json").write_text(json.dumps(raw))


def unlist(export_dir: Path, name: str) -> None:
    """Delete an exported file and its manifest entry."""
    raw = json.loads((export_dir / "manifest.json").read_text())
    raw["artifacts"] = [a for a in raw["artifacts"] if a["path"] != name]
    (export_dir / "manifest.json").write_text(json.dumps(raw))
    (export_dir / name).unlink()


def damage_onnx_conv(path: Path) -> str:
    """Multiply the weight scales of the middle Conv of an int8 QDQ file by 10; return that Conv's output tensor."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    conv = convs[len(convs) // 2]
    weight_dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    assert weight_dq.op_type == "DequantizeLinear"
    scale = next(i for i in model.graph.initializer if i.name == weight_dq.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(10), scale.name))
    onnx.save(model, str(path))
    return conv.output[0]


def damage_tflite_conv(path: Path, choose=None) -> str:
    """Multiply the filter scales of a convolution of an int8 .tflite by 10 (flatbuffer edit): ``choose(names)``
    picks it by the output tensor names of its CONV_2D and DEPTHWISE_CONV_2D ops (default: the first CONV_2D,
    the stem); return that op's output tensor name."""
    from ai_edge_litert import schema_py_generated as schema

    from edgeseg.export.tflite_flatbuffer import _name, _pack, _unpack

    model = _unpack(path.read_bytes())
    graph, codes = model.subgraphs[0], model.operatorCodes
    kinds = {schema.BuiltinOperator.CONV_2D: "CONV_2D", schema.BuiltinOperator.DEPTHWISE_CONV_2D: "DEPTHWISE_CONV_2D"}
    convs = [op for op in graph.operators if max(codes[op.opcodeIndex].builtinCode,
                                                  codes[op.opcodeIndex].deprecatedBuiltinCode) in kinds]
    if choose is None:
        conv = next(op for op in convs if max(codes[op.opcodeIndex].builtinCode, codes[op.opcodeIndex].deprecatedBuiltinCode)
                    == schema.BuiltinOperator.CONV_2D)
    else:
        names = [_name(graph.tensors[op.outputs[0]]) for op in convs]
        conv = convs[names.index(choose(names))]
    weights = graph.tensors[conv.inputs[1]]
    assert weights.type == schema.TensorType.INT8 and len(weights.quantization.scale) > 1  # per-channel int8
    weights.quantization.scale = [s * 10 for s in weights.quantization.scale]
    path.write_bytes(_pack(model))
    return _name(graph.tensors[conv.outputs[0]])


def quant_error_json(cli, path, *args) -> dict:
    res = cli("inspect", path, "--quant-error", "--json", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # stdout carries the JSON alone: library progress goes to stderr


def write_images(folder: Path, count: int, size=(64, 64)) -> Path:
    from PIL import Image

    from edgeseg.data.datasets import builtin_source

    folder.mkdir()
    src = builtin_source("val", "portrait", count, size)
    for i in range(count):
        Image.fromarray(src.get(i)[0]).save(folder / f"img{i}.png")
    return folder


def test_quant_error_onnx_ranks_the_damaged_conv_first(cli, exported, export_copy, tmp_path):
    from edgeseg.export.quant_error import NOTABLE_LOSS_DB

    images = write_images(tmp_path / "imgs", 3)
    intact = quant_error_json(cli, exported.find("onnx", "int8").file, "--data", images, "--count", "2")
    assert intact["images"] == 2 and intact["image_source"] == str(tmp_path / "imgs")
    assert intact["tool"] == "onnxruntime.quantization.qdq_loss_debug"
    assert intact["reference"] == "tiny-fp32.onnx (after quant_pre_process)"
    # every layer is named after the module it comes from (the dynamo exporter's weight names and scopes)
    assert all(r["layer"] for r in intact["layers"])
    assert {"encoder.conv_stem", "head"} <= {r["layer"] for r in intact["layers"]}

    int8 = export_copy / "tiny-int8.onnx"
    damaged = damage_onnx_conv(int8)
    relist(export_copy, int8)
    out = tmp_path / "ranking.json"
    res = cli("inspect", int8, "--quant-error", "--json", out)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    top = report["layers"][0]
    assert top["tensor"] == damaged and top["op"] == "Conv", report["layers"][:3]
    assert top["weight_sqnr_db"] < 0 < 30 < next(r for r in intact["layers"] if r["tensor"] == damaged)["weight_sqnr_db"]
    assert top["sqnr_lost_db"] > max(NOTABLE_LOSS_DB, next(r for r in intact["layers"] if r["tensor"] == damaged)["sqnr_lost_db"])
    assert report["written_by"].startswith("edgeseg") and report["images"] == 8  # the default: built-in eval set
    assert quant_error_json(cli, int8, "--data", images, "--count", "2")["output_sqnr_db"] < intact["output_sqnr_db"]
    assert [r["rank"] for r in report["layers"]] == list(range(1, len(report["layers"]) + 1))
    # the table: worst first, the layer's module path, and one line saying what to do
    text = res.stdout
    assert "quantization error per layer" in text and top["layer"] in text and "SQNR lost" in text
    hint = next(line for line in text.splitlines() if line.startswith("hint: "))
    assert top["layer"] in hint and "weights are the cause" in hint and "--precisions fp16" in hint
    assert "keep this op float" not in hint  # no option does that


def test_quant_error_hint_names_only_the_calibration_methods_the_format_offers():
    """TFLite offers only minmax (export refuses tflite=percentile): its hint must not suggest another method."""
    from edgeseg.export.quant_error import NOTABLE_LOSS_DB, hint, other_calib_methods

    assert other_calib_methods("tflite", "minmax") == []
    assert other_calib_methods("onnx", "minmax") == ["entropy", "percentile"]
    for loss in (NOTABLE_LOSS_DB / 2, NOTABLE_LOSS_DB * 2):  # nothing stands out; an activation range
        layers = [{"layer": "decoder/x", "op": "CONV_2D", "sqnr_lost_db": loss, "weight_sqnr_db": 45.0}]
        tflite = hint(layers, "tflite", other_calib_methods("tflite", "minmax"))
        onnx = hint(layers, "onnx", other_calib_methods("onnx", "entropy"))
        assert "--calib DIR" in tflite and "--calib-method" not in tflite and "keep this op float" not in tflite
        assert "--calib-method onnx=minmax or onnx=percentile" in onnx and "entropy" not in onnx


def test_quant_error_tflite_ranks_the_damaged_conv_first(cli, exported, export_copy):
    """The tiny model has one mean/std for all channels, so its fp32 .tflite takes normalized input and the int8
    file has the normalization in its graph: the float graph is the fp32 file with the normalization put in front,
    as export derived the graph it quantized. No checkpoint needed (it is pointed at nothing here)."""
    from edgeseg.export import quant_error as qe

    _no_checkpoint(export_copy)
    int8 = export_copy / "tiny-int8.tflite"
    damaged = damage_tflite_conv(int8)
    relist(export_copy, int8)
    report = quant_error_json(cli, int8, "--count", "2")
    assert report["reference"] == "tiny-fp32.tflite with the input normalization in front, as export quantized it"
    assert report["tool"].startswith("ai_edge_quantizer Quantizer.validate")
    top = report["layers"][0]
    assert top["tensor"] == damaged and top["op"] == "CONV_2D", report["layers"][:3]
    assert top["weight_sqnr_db"] < 0 and top["sqnr_lost_db"] > qe.NOTABLE_LOSS_DB
    assert top["layer"].startswith("encoder/") and f"_{top['layer'].rsplit('/', 1)[-1]};" in damaged, top["layer"]
    assert report["layers"][-1]["sqnr_lost_db"] < qe.NOTABLE_LOSS_DB  # the rest of the graph matched, layer by layer
    assert "input_normalization" in {r["layer"] for r in report["layers"]}
    # TFLite offers only minmax calibration, and no option keeps an op float: the hint names neither
    assert "weights are the cause" in report["hint"] and "--calib-method" not in report["hint"]
    assert "keep this op float" not in report["hint"]


def _stray_scope_conv(names: list[str]) -> str:
    """The decoder depthwise conv whose fused tensor name ends with a scope of the encoder (the module that made its
    input: the skip connection): named after that last scope, it passed for an encoder layer."""
    return next(n for n in names if "_dw_skip/" in n.split(";")[0] and "_encoder/" in ";".join(n.split(";")[1:]))


def test_quant_error_tflite_names_each_layer_by_the_module_that_writes_it(cli, exported, export_copy):
    """litert-torch joins the scopes of fused ops and of the op's input with ';': the op's own module is the first.
    A damaged decoder conv whose tensor name ends with an encoder scope is ranked first under its decoder name, and
    no two rows share a name (a module writing two tensors, e.g. a squeeze-excite's MEAN and MUL, gets #2)."""
    int8 = export_copy / "tiny-int8.tflite"
    damaged = damage_tflite_conv(int8, _stray_scope_conv)
    relist(export_copy, int8)
    report = quant_error_json(cli, int8, "--count", "2")
    top = report["layers"][0]
    assert top["tensor"] == damaged and top["op"] == "DEPTHWISE_CONV_2D", report["layers"][:3]
    assert top["layer"].startswith("decoder/UpBlock_") and "/dw_skip/" in top["layer"], top["layer"]
    names = [r["layer"] for r in report["layers"]]
    assert len(names) == len(set(names)) and any(n.endswith("#2") for n in names), names
    intact = quant_error_json(cli, exported.find("tflite", "int8").file, "--count", "2")
    assert sorted(r["layer"] for r in intact["layers"]) == sorted(names)  # the same names, damaged or not


def test_quant_error_tflite_of_an_int8_file_whose_input_quantization_normalizes(cli, exported, export_copy):
    """With one integer mean (here the manifest says 128), export quantizes the normalized-input graph and the
    uint8 input's own quantization is the normalization (``folds_into_uint8_input``): the float model is then the
    fp32 file as it is, both fed normalized values (fed raw pixels, the int8 file would read them as 58x too big)."""
    from edgeseg.export import tflite_convert as tc
    from edgeseg.export.tflite_flatbuffer import io_details
    from edgeseg.runtime.base import normalize_nhwc, normalized_range

    mean, std = [128.0] * 3, list(exported.model["std"])
    raw = json.loads((export_copy / "manifest.json").read_text())
    raw["model"]["mean"] = mean
    (export_copy / "manifest.json").write_text(json.dumps(raw))
    rng = np.random.default_rng(0)
    batches = [normalize_nhwc(rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8), mean, std) for _ in range(4)]
    int8 = export_copy / "tiny-int8.tflite"
    int8.write_bytes(tc._full_int8((export_copy / "tiny-fp32.tflite").read_bytes(), batches,
                                   input_range=normalized_range(mean, std))[0])
    relist(export_copy, int8, input={**exported.find("tflite", "int8").input, **io_details(int8.read_bytes())[0][0]})
    report = quant_error_json(cli, int8, "--count", "2")
    assert report["reference"] == "tiny-fp32.tflite"
    assert report["output_sqnr_db"] > 10, report["output_sqnr_db"]


@prefetched("tflite_rebuilt_quant_error", seconds=22)
def _quant_error_without_fp32_tflite(prefetch, folder):
    """``inspect --quant-error`` of the shared export's int8 .tflite in a copy without the fp32 .tflite, so the
    float graph is rebuilt from the checkpoint (run ahead: a litert-torch conversion, ~20 s)."""
    shared = prefetch.get("shared_export").dir
    raw = json.loads((shared / "manifest.json").read_text())
    keep = [(a["format"], a["precision"]) for a in raw["artifacts"] if (a["format"], a["precision"]) != ("tflite", "fp32")]
    copy = copy_export(shared, folder / "exp", keep=keep)
    r = run_edgeseg("inspect", copy / "tiny-int8.tflite", "--quant-error", "--count", "2", "--json", folder / "q.json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads((folder / "q.json").read_text())


@pytest.fixture
def tflite_rebuilt_quant_error(prefetch, shared_export):
    return prefetch.get("tflite_rebuilt_quant_error")


def test_quant_error_tflite_without_fp32_file_rebuilds_the_float_graph(cli, tflite_rebuilt_quant_error, exported):
    """With no fp32 .tflite in the export, the float graph is rebuilt from the checkpoint the manifest names,
    the way export built it: the very same numbers as the fp32 file with the normalization in front."""
    rebuilt = tflite_rebuilt_quant_error
    derived = quant_error_json(cli, exported.find("tflite", "int8").file, "--count", "2")
    assert derived["reference"].startswith("tiny-fp32.tflite with the input normalization in front")
    assert rebuilt["reference"].startswith(f"float graph rebuilt from {exported.model['checkpoint']['path']}")
    assert rebuilt["layers"] == derived["layers"] and len(rebuilt["layers"]) > 10


QUANT_ERROR_REFUSALS = {
    "fp32 file": (lambda d: d / "tiny-fp32.onnx", "is fp32, not int8"),
    "Core ML": (lambda d: d / "tiny-int8.mlpackage", "does not support Core ML"),
    "no manifest": (lambda d: (d / "manifest.json").unlink() or d / "tiny-int8.onnx", "no manifest.json beside it"),
    "ONNX without fp32": (lambda d: unlist(d, "tiny-fp32.onnx") or d / "tiny-int8.onnx", "export fp32 too"),
    "TFLite without fp32 or checkpoint": (lambda d: _no_checkpoint(d) or unlist(d, "tiny-fp32.tflite") or d / "tiny-int8.tflite",
                                          "export fp32 too"),
}


def _no_checkpoint(export_dir: Path) -> None:
    raw = json.loads((export_dir / "manifest.json").read_text())
    raw["model"]["checkpoint"]["path"] = str(export_dir / "gone.pt")
    (export_dir / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("case", list(QUANT_ERROR_REFUSALS))
def test_quant_error_refuses_what_it_cannot_compare(cli, export_copy, case):
    make, expected = QUANT_ERROR_REFUSALS[case]
    path = make(export_copy)
    line = assert_refused(cli, "inspect", path, "--quant-error", "--json", export_copy / "out.json", watch=[export_copy])
    assert expected in line and str(path) in line, line


@pytest.mark.parametrize("args, expected", [
    (("--quant-error", "--data", "missing"), "missing: not a folder; it must be a folder of images"),
    (("--quant-error", "--data", "empty"), "--data {tmp}/empty: no images for --quant-error (reads .jpg"),
    (("--count", "3"), "--data and --count apply only with --quant-error"),
    (("--quant-error", "--json", "precious.json"), "is not a JSON report edgeseg wrote"),
])
def test_quant_error_bad_options_are_one_line_exit_2(cli, exported, tmp_path, args, expected):
    (tmp_path / "empty").mkdir()
    (tmp_path / "precious.json").write_text('{"mine": true}')
    args = [str(tmp_path / a) if a in ("missing", "empty", "precious.json") else a for a in args]
    assert_refused(cli, "inspect", exported.find("onnx", "int8").file, *args, watch=[tmp_path, exported.root],
                   match=expected.format(tmp=tmp_path))


def test_quant_error_names_the_missing_extra(exported, tmp_path):
    blocker = tmp_path / "block" / "ai_edge_quantizer"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ai_edge_quantizer is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    r = subprocess.run([sys.executable, "-m", "edgeseg.cli", "inspect", str(exported.find("tflite", "int8").file),
                        "--quant-error"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert "pip install 'edgeseg[tflite]'" in one_line_error(r.stderr)


def test_inspect_of_a_tflite_file_prints_no_litert_delegate_notice(exported):
    """'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.' from LiteRT's C++ runtime landed on stderr
    (in a fresh process: LiteRT prints it once per process)."""
    from conftest import run_edgeseg

    r = run_edgeseg("inspect", exported.root / "tiny-int8.tflite")
    assert r.returncode == 0, r.stderr
    assert "XNNPACK delegate" not in r.stderr and "tiny-int8.tflite" in r.stdout
