"""ExecuTorch (.pte, XNNPACK) export and Runner on the tiny model: real executorch, real files."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("executorch", reason="the ExecuTorch tests need the [executorch] extra")

from edgeseg.errors import EdgesegError  # noqa: E402
from edgeseg.manifest import read_manifest  # noqa: E402
from edgeseg.runtime.loader import load_model  # noqa: E402

from conftest import one_line_error, run_edgeseg_without  # noqa: E402


def test_both_precisions_pass_parity_with_every_op_in_xnnpack(executorch_export):
    manifest = read_manifest(executorch_export)
    arts = {a.precision: a for a in manifest.artifacts}
    assert set(arts) == {"fp32", "int8"} and all(a.format == "executorch" for a in arts.values())
    for art in arts.values():
        assert art.path.endswith(".pte") and art.parity["passed"] is True and art.parity["runtime"] == "executorch"
        assert art.parity["stress"]["passed"] is True
        assert art.input == {"name": "image", "shape": [1, 3, 64, 64], "dtype": "float32", "layout": "NCHW",
                             "expects": "normalized"}
        delegation = art.details["delegation"]
        assert delegation["backend"] == "XnnpackBackend" and delegation["partitions"] == 1
        assert delegation["delegated_ops"] > 0
        # outside XNNPACK only casts of the activations' scalar constants (hard-swish's 3 and 6), once per run
        assert set(delegation["not_delegated"]) <= {"dim_order_ops._to_dim_order_copy.default"}
    assert arts["fp32"].parity["agreement_miou"] == 1.0
    assert arts["int8"].quantized.startswith("int8 static") and arts["int8"].details["calibration"] == "minmax"
    # the quantize / dequantize pairs and quantized convolutions run inside the XNNPACK partition too
    assert arts["int8"].details["delegation"]["delegated_ops"] > arts["fp32"].details["delegation"]["delegated_ops"]
    assert arts["int8"].bytes < arts["fp32"].bytes / 2
    assert manifest.model["calibration"]["methods"] == {"executorch": "minmax"}


def test_runner_matches_pytorch_through_load_and_predict(executorch_export, tiny_checkpoint):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    torch_model = load_model(str(tiny_checkpoint))
    pte = load_model(str(executorch_export), pick="executorch:fp32", threads=1)
    try:
        assert pte.runner.runtime == "executorch" and pte.view.format == "executorch"
        ours, theirs = pte.runner.run(images), torch_model.runner.run(images)
        assert ours.shape == (2, 2, 64, 64) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    finally:
        pte.runner.close()
        torch_model.runner.close()


def test_the_process_wide_thread_pool_is_never_resized_under_an_open_program(executorch_export):
    import torch

    before = torch.get_num_threads()
    first = load_model(str(executorch_export), pick="executorch:fp32", threads=1)
    assert torch.get_num_threads() == 1  # PyTorch's own pool stays out of the way while a program is open
    try:
        with pytest.raises(EdgesegError, match="ExecuTorch's thread pool is shared by the process"):
            load_model(str(executorch_export), pick="executorch:int8", threads=2)
        same = load_model(str(executorch_export), pick="executorch:int8", threads=1)  # same size: fine
        same.runner.close()
    finally:
        first.runner.close()
    second = load_model(str(executorch_export), pick="executorch:int8", threads=2)  # nothing open: resized
    try:
        assert second.runner.run(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 2, 64, 64)
    finally:
        second.runner.close()
    assert torch.get_num_threads() == before


def test_unsupported_precision_is_refused_before_any_work(tiny_checkpoint, tmp_path, cli):
    r = cli("export", tiny_checkpoint, "--out", tmp_path / "out", "--formats", "executorch", "--precisions", "fp16")
    assert r.exit_code == 2 and "executorch export does not support precision 'fp16'; supported: fp32, int8" in r.output
    assert not (tmp_path / "out").exists()


def test_missing_extra_names_the_extra(tiny_checkpoint, tmp_path):
    r = run_edgeseg_without("executorch", tmp_path, "export", tiny_checkpoint, "--out", tmp_path / "e",
                            "--formats", "executorch", "--precisions", "fp32")
    assert r.returncode == 2
    assert "pip install 'edgeseg[executorch]'" in one_line_error(r.stderr)
    assert not (tmp_path / "e").exists()


def test_an_integer_mean_makes_the_int8_program_take_pixel_minus_128_with_the_same_logits(tmp_path, monkeypatch):
    """One integer mean and std for all channels (the packaged default's 114 / 58): the int8 .pte takes the int8
    its first quantize op made, ``pixel - 128``, and gives the logits of the float-input program bit for bit."""
    from edgeseg.export import executorch_convert
    from edgeseg.runtime.base import int8_pixels_nchw
    from edgeseg.runtime.executorch_runner import ExecuTorchRunner

    import torch

    torch.manual_seed(0)  # a small conv net: lowering the tiny U-Net twice took a minute of the suite
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).eval()
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    mean, std = [114.0] * 3, [58.0] * 3

    def program(name):
        result = executorch_convert.convert_executorch(model, height=64, width=64, precision="int8", mean=mean,
                                                       std=std, calib_images=calib)
        (tmp_path / name).write_bytes(result.data)
        return result, ExecuTorchRunner(str(tmp_path / name), input_size=(64, 64), mean=mean, std=std,
                                        expects=result.input["expects"], threads=1)

    folded, folded_runner = program("pixels.pte")
    monkeypatch.setattr(executorch_convert, "folds_into_uint8_input", lambda mean, std: False)
    plain, plain_runner = program("normalized.pte")
    assert folded.input == {"name": "image", "shape": [1, 3, 64, 64], "dtype": "int8", "layout": "NCHW",
                            "expects": "pixels_int8", "quantization": {"scale": pytest.approx(1 / 58), "zero_point": -14}}
    assert plain.input["dtype"] == "float32" and plain.input["expects"] == "normalized"
    assert "int8 input: pixel - 128" in folded.quantized and "int8 input" not in plain.quantized
    assert folded.delegation["not_delegated"] == plain.delegation["not_delegated"]
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    images[1, 0, :4, 0] = [0, 127, 128, 255]  # the extremes and the middle of the pixel range
    try:
        np.testing.assert_array_equal(folded_runner.run(images), plain_runner.run(images))
    finally:
        folded_runner.close()
        plain_runner.close()
    assert int8_pixels_nchw(images[1:])[0, 0, 0, :4].tolist() == [-128, -1, 0, 127]
