"""The Python API (``edgeseg.load``, ``Segmenter``, ``edgeseg.export_module``): real models, real runtimes.

The default model is only run (never exported); exports use the tiny checkpoint or a few-conv
module at 64x64, fp32 (int8 only where a failing gate is needed), 4 parity images.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import edgeseg
from edgeseg.fsutil import JSON_MARK
from edgeseg.manifest import read_manifest

QUICK = {"parity_images": 4}  # calib_count only where int8 is made: refused elsewhere
PORTRAIT = {"classes": ["background", "person"], "input_size": (64, 64), "mean": (127.5,) * 3, "std": (127.5,) * 3}
EVAL_KEYS = {"model", "format", "precision", "data", "miou", "per_class_iou", "pixel_accuracy", "boundary_iou",
             "images"}


class TinyNet(nn.Module):
    """A user's own segmenter: a few convolutions, logits upsampled to the input."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return F.interpolate(self.head(self.down(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


class Branchy(TinyNet):
    """A forward that branches on a tensor's value: runs in eager mode, but no exporter can capture it."""

    def forward(self, x):
        logits = super().forward(x)
        if x.mean() > 0:
            return logits * 2
        return logits


def photo(height: int = 75, width: int = 120, seed: int = 0) -> np.ndarray:
    """An RGB image of a size no model here runs at: smooth colours with a bright blob."""
    yy, xx = np.mgrid[:height, :width]
    rng = np.random.default_rng(seed)
    blob = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2)[..., None] * 120
    return np.clip(rng.integers(0, 60, (height, width, 3)) + blob + xx[..., None] % 90, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def default():
    with edgeseg.load("default") as seg:
        yield seg


@pytest.fixture(scope="module")
def tiny_export(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported to ONNX fp32 through the API: (manifest, export dir)."""
    out = tmp_path_factory.mktemp("api_export") / "exp"
    with edgeseg.load(tiny_checkpoint) as seg:
        manifest = seg.export(out, formats="onnx", precisions=["fp32"], stress="off", **QUICK)
    return manifest, out


def test_import_loads_neither_torch_nor_numpy():
    code = "import sys, edgeseg; print(sorted({'torch', 'numpy', 'edgeseg.api'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    assert {"load", "Segmenter", "export_checkpoint", "export_module", "Manifest", "ParityFailed"} <= set(edgeseg.__all__)
    assert all(getattr(edgeseg, name) is not None for name in edgeseg.__all__)


def test_default_model_predicts_an_array_a_path_and_a_pil_image(default, tmp_path):
    image = photo()
    mask = default.predict(image)
    assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
    assert mask.max() < len(default.classes)
    assert (default.format, default.precision, default.classes) == ("checkpoint", "fp32", ("background", "person"))
    assert len(default.mean) == len(default.std) == 3 and default.input_size == (256, 256)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    np.testing.assert_array_equal(default.predict(path), mask)
    np.testing.assert_array_equal(default.predict(str(path)), mask)
    np.testing.assert_array_equal(default.predict(Image.fromarray(image)), mask)


def test_predict_proba_is_a_distribution_whose_argmax_is_predict(default):
    image = photo(seed=1)
    proba = default.predict_proba(image)
    assert proba.shape == (len(default.classes), *image.shape[:2]) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-5)
    assert proba.min() >= 0
    np.testing.assert_array_equal(proba.argmax(axis=0), default.predict(image))


def test_evaluate_returns_what_eval_json_writes(default, cli, tmp_path):
    result = default.evaluate(count=4)
    assert EVAL_KEYS <= set(result) and result["images"] == 4
    assert set(result["per_class_iou"]) == set(default.classes)
    assert cli("eval", "--count", "4", "--json", tmp_path / "e.json").exit_code == 0
    written = json.loads((tmp_path / "e.json").read_text())
    assert set(written) - {JSON_MARK} == set(result)
    assert written["miou"] == pytest.approx(result["miou"])


def test_arrays_of_the_kinds_image_files_come_in_give_the_file_s_mask(default, tmp_path):
    """[H, W, 1] and uint16 arrays were refused, though 16-bit image files work."""
    rgb = photo(40, 52, seed=1)
    gray = rgb.mean(axis=2).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    expected = default.predict(tmp_path / "g.png")
    assert np.array_equal(default.predict(gray[..., None]), expected)
    assert np.array_equal(default.predict(gray.astype(np.uint16) * 257), expected)  # 16-bit, scaled to 8
    assert np.array_equal(default.predict(rgb.astype(np.uint16) * 257), default.predict(rgb))


def test_bad_images_and_specs_raise_edgeseg_errors(default, tmp_path):
    with pytest.raises(edgeseg.DataError, match=r"float32 \[4, 4, 3\]; it must be uint8 RGB"):
        default.predict(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(edgeseg.DataError, match="file not found"):
        default.predict(tmp_path / "missing.png")
    with pytest.raises(edgeseg.EdgesegError, match="model not found"):
        edgeseg.load(tmp_path / "missing.pt")
    with pytest.raises(edgeseg.EdgesegError, match="precision='int4': choose from fp32"):
        edgeseg.load("default", precision="int4")


def test_export_returns_the_manifest_with_parity_readable_as_attributes(tiny_export, tiny_checkpoint):
    manifest, out = tiny_export
    assert isinstance(manifest, edgeseg.Manifest) and manifest.root == out
    (art,) = manifest.artifacts
    assert art.path == "tiny-fp32.onnx" and (out / art.path).is_file()
    assert art.parity.passed is True and art.parity["passed"] is True
    assert art.parity.agreement_miou == art.parity["agreement_miou"] >= art.parity.threshold
    assert manifest.model.checkpoint.path == str(tiny_checkpoint)
    assert read_manifest(out).to_dict() == manifest.to_dict()


def test_export_dir_loads_its_best_file_and_cannot_be_exported_again(tiny_export, tiny_checkpoint, tmp_path):
    _, out = tiny_export
    image = photo(50, 70, seed=2)
    with edgeseg.load(out) as exported, edgeseg.load(tiny_checkpoint) as torch_model:
        assert (exported.format, exported.precision) == ("onnx", "fp32")
        assert exported.artifact.parity.passed and exported.classes == torch_model.classes
        mask = exported.predict(image)
        assert mask.shape == image.shape[:2]
        assert (mask == torch_model.predict(image)).mean() > 0.99
        with pytest.raises(edgeseg.EdgesegError, match="is an exported onnx file; export starts from a PyTorch model"):
            exported.export(tmp_path / "again")
    with pytest.raises(edgeseg.EdgesegError, match="no artifact 'tflite'"):
        edgeseg.load(out, format="tflite")
    with pytest.raises(edgeseg.EdgesegError, match="closed"):
        exported.predict(image)


def test_failed_parity_gate_raises_with_the_manifest_and_keeps_the_files(tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    # int8 of a 40-step model flips some pixels, so demanding exact agreement fails (as in test_export_common)
    with edgeseg.load(tiny_checkpoint) as seg, pytest.raises(edgeseg.ParityFailed, match="tiny-int8.onnx") as failed:
        seg.export(out, formats="onnx", precisions="int8", thresholds={"int8": 1.0}, stress="off", calib_count=4, **QUICK)
    (art,) = failed.value.manifest.artifacts
    assert art.parity.passed is False and art.parity.agreement_miou < 1
    assert (out / "tiny-int8.onnx").is_file() and read_manifest(out).artifacts[0].parity.passed is False
    assert isinstance(failed.value, edgeseg.GateFailed) and not isinstance(failed.value, edgeseg.EdgesegError)


def test_export_module_of_a_custom_module_to_onnx_and_tflite(tmp_path):
    torch.manual_seed(0)
    net = TinyNet().train()
    manifest = edgeseg.export_module(net, tmp_path / "net", formats=["onnx", "tflite"], precisions="fp32", **PORTRAIT,
                                     **QUICK)
    assert net.training, "the caller's module is left as it was"
    assert [(a.format, a.parity.passed) for a in manifest.artifacts] == [("onnx", True), ("tflite", True)]
    assert all(a.parity.stress.images > 0 and a.parity["stress"].passed for a in manifest.artifacts)
    model = manifest.model
    assert model.architecture == "custom (TinyNet)" and model.name == "TinyNet" and "checkpoint" not in model
    assert model.module["class"].endswith("TinyNet") and len(model.module.sha256) == 64
    assert model.params == sum(p.numel() for p in net.parameters())
    image = photo(40, 30, seed=3)
    with edgeseg.load(tmp_path / "net", format="tflite") as tflite, \
            edgeseg.load(tmp_path / "net" / "TinyNet-fp32.onnx") as onnx:
        assert tflite.format == "tflite" and onnx.format == "onnx"
        assert (tflite.predict(image) == onnx.predict(image)).mean() > 0.99


@pytest.mark.parametrize("change,message", [
    ({"module": TinyNet(classes=3)}, "3 output channels but 2 classes; give one class name per channel"),
    ({"mean": (127.5, 127.5)}, "mean=(127.5, 127.5): it must be three finite numbers"),
    ({"std": [1, 0, 1]}, "std=(1, 0, 1): it must be three finite numbers > 0"),
    ({"input_size": (64,)}, "input_size=(64,): it must be [height, width]"),
    ({"classes": ["person", "person"]}, "it must be a non-empty list of distinct class names"),
    ({"module": nn.Conv2d(3, 2, 3, stride=2)}, "returned torch.float32 [1, 2, 31, 31] for a [1, 3, 64, 64] input: "
                                               "it must return float logits [1, 2, 64, 64] at the input resolution"),
    ({"module": "model.pt"}, "module of type str is not a torch.nn.Module"),
    ({"formats": "onnx,onnx"}, "--formats lists onnx more than once"),
    ({"parity_images": 0}, "parity_images=0: it must be an integer >= 1"),
    ({"module": Branchy()}, "module Branchy cannot be exported: torch.export could not capture it ("),
    ({"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}, "look like 0-1 units; edgeseg takes them in 0-255"),
], ids=["channels", "mean", "std", "input_size", "classes", "shape", "not-a-module", "formats", "parity-images",
        "data-dependent-branch", "0-1-units"])
def test_export_module_refuses_bad_arguments_before_any_work(tmp_path, change, message):
    args = {"module": TinyNet(), **PORTRAIT, **change}
    with pytest.raises(edgeseg.EdgesegError) as refused:
        edgeseg.export_module(args.pop("module"), tmp_path / "out", **args)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_a_model_whose_classes_match_no_builtin_set_gets_agreement_only_parity_and_no_guessed_eval(tmp_path, cli):
    torch.manual_seed(0)
    scene = {**PORTRAIT, "classes": ["background", "sky", "road"]}
    manifest = edgeseg.export_module(TinyNet(classes=3), tmp_path / "net", formats="onnx", precisions="fp32", **scene,
                                     **QUICK)
    (art,) = manifest.artifacts
    assert art.parity.passed is True and art.parity.agreement_miou > 0.99
    assert art.parity.gt_miou is None and art.parity.reference_gt_miou is None, "no labels: no accuracy numbers"
    assert "agreement only" in art.parity.data and "--data DIR" in art.parity.data
    assert manifest.model.task is None
    assert "calibration" not in manifest.model, "fp32 only: nothing calibrated, none recorded"
    from edgeseg.export.quant_images import calibration_images  # what an int8 file of it would be calibrated on

    assert "no built-in set has the model's classes" in calibration_images(None, None, None, 1, (64, 64)).source
    with edgeseg.load(tmp_path / "net") as seg, pytest.raises(edgeseg.DataError) as refused:
        seg.evaluate(count=2)
    assert "classes (background, sky, road) match no built-in synthetic set" in str(refused.value)
    assert "pass --data DIR" in str(refused.value)
    result = cli("eval", tmp_path / "net", "--count", 2)
    assert result.exit_code == 2 and "match no built-in synthetic set" in result.output


@pytest.mark.parametrize("call,message", [
    (lambda: edgeseg.load(123), "spec=123: give 'default', 'parts', a checkpoint"),
    (lambda: edgeseg.load(""), "spec='': give 'default'"),
    (lambda: edgeseg.load("default", threads=0), "threads=0: it must be an integer >= 1"),
    (lambda: edgeseg.load("default").evaluate(count=0), "count=0: it must be an integer >= 1"),
], ids=["not-a-path", "empty", "threads", "count"])
def test_load_and_evaluate_refuse_bad_arguments_in_one_line(call, message):
    """They raised TypeError from pathlib, read '' as the current folder, accepted threads=0, and evaluate(count=0)
    failed with 'need at least one array to stack'."""
    with pytest.raises(edgeseg.EdgesegError) as refused:
        call()
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("output", ["alpha", "cutout", "blur", "replace"])
def test_render_and_matte_give_what_edgeseg_predict_writes(default, cli, tmp_path, output):
    """The CLI's outputs (blur, cutout, replace, the refined soft matte) had no Python call: only class ids
    and probabilities, and predict(refine=True) thresholded the refined matte."""
    Image.fromarray(photo(60, 44, seed=2)).save(tmp_path / "p.png")
    Image.fromarray(photo(30, 50, seed=3)).save(tmp_path / "bg.png")
    extra = ["--background", tmp_path / "bg.png"] if output == "replace" else []
    r = cli("predict", "default", tmp_path / "p.png", "--out", tmp_path / "out", "--output", output, "--refine", *extra)
    assert r.exit_code == 0, r.output
    written = Image.open(tmp_path / "out" / "p.png")
    background = Image.open(tmp_path / "bg.png") if output == "replace" else None
    picture = default.render(tmp_path / "p.png", output, background=background, refine=True)
    assert picture.mode == written.mode and np.array_equal(np.asarray(picture), np.asarray(written))
    if output == "alpha":
        matte = default.matte(tmp_path / "p.png", refine=True)
        assert matte.dtype == np.float32 and matte.shape == (60, 44)
        assert np.abs(np.round(matte * 255) - np.asarray(written)).max() <= 1
        assert ((matte > 0.05) & (matte < 0.95)).any()  # soft at the edges, not thresholded


def test_render_refuses_unknown_outputs_and_replace_without_background(default):
    with pytest.raises(edgeseg.EdgesegError, match="output='sepia': choose from mask, alpha"):
        default.render(photo(8, 8), "sepia")
    with pytest.raises(edgeseg.EdgesegError, match="output='replace' needs background="):
        default.render(photo(8, 8), "replace")
    with pytest.raises(edgeseg.EdgesegError, match=r"open a model with edgeseg.load\('default'\)"):
        edgeseg.Segmenter("default")


def test_a_stream_frame_gives_several_outputs_from_one_step_and_each_call_is_a_step(default):
    """predict then predict_proba of one frame stepped the stabilizer twice with no way to get both from one step:
    the two disagreed (0.5-1.2% of the pixels). step(frame) gives every output of one step; and each call is one
    step, repeated frames included (a frozen camera converges as --smooth does)."""
    from edgeseg.runtime.stabilizer import frame_run
    from edgeseg.apply.predict import predict_proba_image

    rng = np.random.default_rng(0)
    base = photo(48, 40, seed=4).astype(int)
    frames = [np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    frames += [frames[-1]] * 3  # the camera froze
    stream = default.stream()
    cli_run = frame_run(default._model.runner.run, True)  # what predict --smooth runs, frame after frame
    for frame in frames:
        result = stream.step(frame)
        proba = result.proba()
        np.testing.assert_array_equal(proba.argmax(0), result.mask())
        np.testing.assert_allclose(result.matte(), 1 - proba[0], atol=1e-6)
        np.testing.assert_allclose(proba, predict_proba_image(cli_run, frame, default.input_size), atol=1e-6)
    assert np.asarray(result.render(output="alpha")).shape == (48, 40)


def test_an_exports_manifest_opens_the_export_and_its_other_files_are_named_for_what_they_are(tiny_export):
    """load('exp/manifest.json') said 'this starts from a PyTorch .pt checkpoint'; the parity reference
    (a .npz) said 'the PyTorch archive is truncated or corrupt; re-download it'."""
    _, out = tiny_export
    with edgeseg.load(out / "manifest.json") as seg:
        assert seg.format == "onnx"
    with pytest.raises(edgeseg.EdgesegError, match=f"is a file of the export in {out}, not a checkpoint or model"):
        edgeseg.load(out / "parity-reference.npz")


def test_export_folds_the_converters_output_away(tiny_checkpoint, tmp_path, capfd):
    """``edgeseg.export_checkpoint`` printed ~40 lines of LiteRT conversion stages, absl/oneDNN logs and warnings
    into the caller's terminal; the CLI folded them, the API did not (``verbose=True`` shows them: see
    test_export_common's --verbose test). capfd: what reaches the process's file descriptors 1 and 2."""
    capfd.readouterr()
    manifest = edgeseg.export_checkpoint(tiny_checkpoint, tmp_path / "e", formats="tflite", precisions="fp32",
                                         parity_images=2, stress="off")
    assert [a.path for a in manifest.artifacts] == ["tiny-fp32.tflite"]
    assert capfd.readouterr() == ("", "")


def test_a_video_given_as_an_image_and_a_smooth_that_is_not_a_bool_say_what_to_do(tmp_path):
    """`seg.predict('clip.mp4')` said 'cannot identify image file'; `stream(smooth='yes')` was taken as True."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0\0\0\x18ftypmp42")
    with edgeseg.load("default") as seg:
        for call in (seg.predict, seg.predict_proba, seg.matte, seg.render):
            with pytest.raises(edgeseg.DataError, match=r"clip.mp4 is a video, not an image: use "
                                                        r"Segmenter.predict_video\(video, out\), or Segmenter.stream\(\)"):
                call(clip)
        with pytest.raises(edgeseg.EdgesegError, match="smooth='yes': give True"):
            seg.stream(smooth="yes")
