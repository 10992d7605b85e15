"""``edgeseg inspect`` on ExecuTorch programs (.pte), described from the file itself (no mocks).

A tiny segmenter (three convolutions, ReLU, bilinear resize back to 32x32, 2 classes) is converted by
``convert_executorch`` at fp32 and int8 once for the module. inspect reads each .pte with
ExecuTorch's own deserializer: the execution plan's DelegateCall / KernelCall instructions and the
XNNPACK graph inside the delegate. A second program, lowered here with an op XNNPACK has no kernel
for (cumsum), shows that the split between delegated and non-delegated ops is measured, not assumed.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error

pytest.importorskip("executorch")

H = W = 32
MEAN = STD = [127.5, 127.5, 127.5]
BACKEND = "XnnpackBackend"
#: parameters of _TinySegmenter: conv 3->8 3x3, conv 8->8 3x3, conv 8->2 1x1, with biases
PARAMS = (3 * 9 * 8 + 8) + (8 * 9 * 8 + 8) + (8 * 2 + 2)


def _tiny_segmenter(torch, extra=None):
    """Conv(3->8, stride 2) ReLU Conv(8->8) ReLU Conv(8->2), resized back to the input size; ``extra``
    is applied to the logits at the end."""
    import torch.nn.functional as F

    class TinySegmenter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.c = torch.nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.c(F.relu(self.b(F.relu(self.a(x)))))
            y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
            return extra(y) if extra is not None else y

    torch.manual_seed(0)
    return TinySegmenter().eval()


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict:
    """precision -> (path of the .pte, convert_executorch's result), fp32 and int8."""
    import torch

    from edgeseg.export.executorch_convert import convert_executorch

    folder = tmp_path_factory.mktemp("pte")
    model = _tiny_segmenter(torch)
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(4)]
    out = {}
    for precision in ("fp32", "int8"):
        result = convert_executorch(model, height=H, width=W, precision=precision, mean=MEAN, std=STD,
                                    calib_images=calib if precision == "int8" else None)
        path = folder / f"tiny-{precision}.pte"
        path.write_bytes(result.data)
        out[precision] = (path, result)
    return out


def inspect_json(cli, path) -> dict:
    res = cli("inspect", path, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def file_states(root: Path) -> dict:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# What the file holds


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_inspect_json_describes_pte(cli, programs, precision):
    path, result = programs[precision]
    before = file_states(path.parent)
    info = inspect_json(cli, path)
    assert file_states(path.parent) == before  # reading changes nothing, writes nothing beside it

    assert info["format"] == "executorch" and info["file"] == str(path)
    data = path.read_bytes()
    assert info["bytes"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["program"]["methods"] == ["forward"] and info["program"]["method"] == "forward"
    assert info["program"]["planned_memory_bytes"] > 0
    assert info["metadata"] == {}  # a .pte carries none
    assert "manifest" not in info and "macs" not in info  # no manifest beside it

    # I/O: float32 NCHW image in, float32 NCHW logits out, as the converter promised.
    assert [t["shape"] for t in info["inputs"]] == [[1, 3, H, W]] == [result.input["shape"]]
    assert [t["shape"] for t in info["outputs"]] == [[1, 2, H, W]] == [result.output["shape"]]
    for t in info["inputs"] + info["outputs"]:
        assert t["dtype"] == "float32" and t["dim_order"] == [0, 1, 2, 3] and t["name"], t

    # Every op runs in XNNPACK: one delegate call, no kernel called outside it.
    cov = info["delegate_coverage"]
    assert set(cov["backends"]) == {BACKEND}
    xnn = cov["backends"][BACKEND]
    assert xnn["calls"] == cov["delegate_calls"] == 1
    assert cov["non_delegated_ops"] == 0 and cov["ops_not_delegated"] == {}
    assert result.delegation["other_ops"] == 0  # what the converter measured on the graph agrees
    assert xnn["ops"] == cov["delegated_ops"] == sum(xnn["op_types"].values()) == sum(info["ops"].values())
    assert info["ops"] == xnn["op_types"]
    assert xnn["op_types"]["XNNConv2d"] == 3 and xnn["op_types"]["XNNStaticResizeBilinear2D"] == 1, xnn
    assert info["params"] == PARAMS  # the conv weights and biases XNNPACK holds (per element, any dtype)

    if precision == "fp32":
        assert xnn["quantized_ops"] == 0 and xnn["quantized_op_types"] == {}
        assert set(xnn["tensor_dtypes"]) == {"fp32"}, xnn
    else:  # the quantized convolutions run inside the delegate, int8 activations, per-channel int8 weights
        assert xnn["quantized_op_types"]["XNNConv2d"] == 3, xnn
        assert xnn["quantized_op_types"].get("XNNConvert", 0) >= 2, xnn  # quantize in, dequantize out
        assert 0 < xnn["quantized_ops"] <= xnn["ops"]
        assert xnn["tensor_dtypes"].get("qint8", 0) > 0 and xnn["tensor_dtypes"].get("qcint8", 0) >= 3, xnn


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_io_agrees_with_runtime_method_meta(cli, programs, precision):
    """The shapes and dtypes inspect reads from the flatbuffer are those ExecuTorch's runtime loads."""
    from executorch.runtime import Runtime

    path, _ = programs[precision]
    info = inspect_json(cli, path)
    meta = Runtime.get().load_program(str(path)).metadata("forward")
    assert meta.num_inputs() == len(info["inputs"]) and meta.num_outputs() == len(info["outputs"])
    assert list(meta.input_tensor_meta(0).sizes()) == info["inputs"][0]["shape"]
    assert list(meta.output_tensor_meta(0).sizes()) == info["outputs"][0]["shape"]


def test_ops_outside_the_delegate_are_counted(cli, tmp_path):
    """cumsum has no XNNPACK kernel: the program calls it as a kernel after the delegate, and inspect says so."""
    import torch

    from edgeseg.export.executorch_convert import _lowered

    model = _tiny_segmenter(torch, extra=lambda y: torch.cumsum(y, dim=1))
    with torch.no_grad():
        program, delegation = _lowered(torch.export.export(model, (torch.zeros(1, 3, H, W),)))
    path = tmp_path / "with_cumsum.pte"
    path.write_bytes(bytes(program.buffer))
    info = inspect_json(cli, path)
    cov = info["delegate_coverage"]
    assert cov["backends"][BACKEND]["op_types"]["XNNConv2d"] == 3, cov
    assert cov["non_delegated_ops"] >= 1, cov
    assert any("cumsum" in op for op in cov["ops_not_delegated"]), cov
    assert sum(cov["ops_not_delegated"].values()) == cov["non_delegated_ops"]
    assert sum(delegation["not_delegated"].values()) == cov["non_delegated_ops"]  # the converter's count agrees
    for op, n in cov["ops_not_delegated"].items():
        assert info["ops"][op] == n
    assert info["outputs"][0]["shape"] == [1, 2, H, W]

    table = cli("inspect", path)
    assert table.exit_code == 0, table.output
    assert "not delegated" in table.stdout and "cumsum" in table.stdout


# ---------------------------------------------------------------------------------------------
# Human-readable output


def test_table_names_backend_and_tensors(cli, programs):
    path, _ = programs["int8"]
    res = cli("inspect", path)
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert path.name in text and "(executorch," in text and f"{PARAMS:,} params" in text
    for word in ("tensors", "input0", "output0", "[1, 3, 32, 32]", "[1, 2, 32, 32]", "float32", "ops",
                 "XNNConv2d", "delegate coverage", BACKEND, "not delegated", "qint8"):
        assert word in text, (word, text)
    assert "0 not delegated" in text


# ---------------------------------------------------------------------------------------------
# Neighbouring manifest: its facts when it lists the file, a refusal when the file is not the listed one


def _list_in_manifest(folder: Path, pte: Path, result, precision: str, sha256: str | None = None) -> None:
    from edgeseg.manifest import Artifact, Manifest

    data = pte.read_bytes()
    art = Artifact(format="executorch", precision=precision, path=pte.name, bytes=len(data),
                   sha256=sha256 or hashlib.sha256(data).hexdigest(), input=dict(result.input),
                   output=dict(result.output), quantized=result.quantized,
                   details={"delegation": result.delegation}, parity={"agreement_miou": 1.0, "passed": True})
    model = {"name": "tiny", "classes": ["background", "person"], "input": {"height": H, "width": W},
             "mean": MEAN, "std": STD, "macs": 85_000_000}
    Manifest(model=model, tools={}, artifacts=[art]).write(folder)


def test_manifest_facts_when_listed(cli, programs, tmp_path):
    path, result = programs["int8"]
    pte = tmp_path / path.name
    pte.write_bytes(path.read_bytes())
    _list_in_manifest(tmp_path, pte, result, "int8")
    info = inspect_json(cli, pte)
    assert info["manifest"] == {"precision": "int8", "quantized": result.quantized,
                                "parity": {"agreement_miou": 1.0, "passed": True}}
    assert info["macs"] == 85_000_000
    assert info["delegate_coverage"]["non_delegated_ops"] == 0  # still measured from the file
    table = cli("inspect", pte)
    assert table.exit_code == 0 and "manifest:" in table.stdout and "85M MACs" in table.stdout


def test_file_not_the_listed_one_is_refused(cli, programs, tmp_path):
    path, result = programs["fp32"]
    pte = tmp_path / path.name
    pte.write_bytes(programs["int8"][0].read_bytes())  # a valid program, but not the one listed
    _list_in_manifest(tmp_path, pte, result, "fp32", sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    res = cli("inspect", pte, "--json")
    assert res.exit_code == 2, res.output
    line = one_line_error(res.output)
    assert "sha256" in line and pte.name in line, line
    assert res.stdout == ""


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line


BAD_FILES = {
    "garbage.pte": (lambda good: b"this is not an executorch program\n" * 10, "not an ExecuTorch program"),
    "empty.pte": (lambda good: b"", "not an ExecuTorch program"),
    "truncated.pte": (lambda good: good[:1000], "ExecuTorch cannot read it"),
    "half.pte": (lambda good: good[:len(good) // 2], "ExecuTorch cannot read it"),
    "onnx_renamed.pte": (lambda good: b"\x08\x09\x12\x07pytorch" + bytes(200), "not an ExecuTorch program"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_bad_pte_is_one_line_exit_2(cli, programs, tmp_path, name, as_json):
    make, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make(programs["fp32"][0].read_bytes()))
    res = cli("inspect", path, *(["--json"] if as_json else []))
    assert res.exit_code == 2, res.output
    line = one_line_error(res.output)
    assert expected in line and name in line, line
    assert res.stdout == ""  # no partial description


def test_damaged_xnnpack_payload_is_one_line_exit_2(cli, programs, tmp_path):
    """The program parses but the XNNPACK graph inside its delegate is overwritten."""
    data = bytearray(programs["fp32"][0].read_bytes())
    start = data.index(b"XH00") - 4  # the XNNPACK payload's header
    offset = int.from_bytes(data[start + 10:start + 14], "little")
    data[start + offset + 4:start + offset + 8] = b"ZZZZ"  # the graph flatbuffer's identifier
    path = tmp_path / "damaged.pte"
    path.write_bytes(bytes(data))
    res = cli("inspect", path, "--json")
    assert res.exit_code == 2, res.output
    line = one_line_error(res.output)
    assert "XNNPACK payload" in line and "damaged.pte" in line, line


def test_missing_executorch_names_the_extra(cli, programs, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)  # import executorch -> ImportError
    res = cli("inspect", programs["fp32"][0], "--json")
    assert res.exit_code == 2, res.output
    line = one_line_error(res.output)
    assert "pip install 'edgeseg[executorch]'" in line and "executorch" in line, line
