"""Choosing the int8 calibration (``--calib-method``) and the calibration images it sees.

Real exports through ONNX Runtime's quantizer on tiny models; scales are read back from the files.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from conftest import assert_refused
from edgeseg.errors import RecipeError
from edgeseg.export.quant_images import AUGMENT_SEED, calibration_images
from edgeseg.export.pipeline import calib_methods_for, load_exporters
from edgeseg.recipe import CALIB_METHODS, AugmentCfg, ExportCfg, recipe_from_dict


def qdq_scales(path) -> tuple[dict, dict]:
    """(activation scales by tensor: QuantizeLinear inputs, weight scales by weight: DequantizeLinear of int8
    initializers; int32 biases are left out, their scale is input scale x weight scale)."""
    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    acts = {n.input[0]: init[n.input[1]] for n in graph.node if n.op_type == "QuantizeLinear"}
    weights = {n.input[0]: init[n.input[1]] for n in graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dtype == np.int8}
    return acts, weights


def test_calib_method_is_recorded_and_changes_the_activation_scales(cli, tiny_checkpoint, shared_export, tmp_path):
    """minmax: the session's export (the default method, 4 calibration images); percentile: exported here from
    the same checkpoint and the same 4 calibration images."""
    r = cli("export", tiny_checkpoint, "--out", tmp_path / "percentile", "--formats", "onnx", "--precisions", "int8",
            "--calib-count", "4", "--parity-images", "2", "--stress", "off", "--threshold", "int8=0.5",
            "--calib-method", "percentile")
    assert r.exit_code == 0, r.output
    methods = {"minmax": {"onnx": "minmax", "tflite": "minmax"}, "percentile": {"onnx": "percentile"}}  # coreml: never
    exports = {}
    for method, out in (("minmax", shared_export.dir), ("percentile", tmp_path / "percentile")):
        manifest = json.loads((out / "manifest.json").read_text())
        (art,) = [a for a in manifest["artifacts"] if (a["format"], a["precision"]) == ("onnx", "int8")]
        assert art["details"]["calibration"] == method
        assert f"{method} calibration" in art["quantized"]
        # the tiny recipe keeps the default augmentation: colour jitter 0.3, no corruption
        calibration = manifest["model"]["calibration"]
        assert calibration["methods"] == methods[method] and calibration["images"] == 4
        assert calibration["augment"] == {"color": 0.3, "corrupt": 0.0, "seed": AUGMENT_SEED}
        assert "with the recipe's training augmentations (color 0.3, corrupt 0" in calibration["source"]
        exports[method] = qdq_scales(out / art["path"])
    (acts_a, weights_a), (acts_b, weights_b) = exports["minmax"], exports["percentile"]
    assert acts_a.keys() == acts_b.keys() and len(acts_a) > 10
    changed = [name for name in acts_a if not np.allclose(acts_a[name], acts_b[name], rtol=1e-6, atol=0)]
    assert len(changed) > len(acts_a) // 2, f"only {len(changed)} of {len(acts_a)} activation scales changed"
    # weights are quantized from their own values: the calibration method must not touch them
    assert weights_a.keys() == weights_b.keys() and len(weights_a) > 10
    assert all(np.array_equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_entropy_searches_a_threshold(tmp_path):
    """ONNX Runtime's Entropy defaults (128 bins) reproduce MinMax exactly; edgeseg's options must not."""
    from edgeseg.export.base import ExportJob
    from edgeseg.export.onnx import OnnxExporter
    from edgeseg.models.checkpoint import ModelInfo

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).eval()
    info = ModelInfo("micro", "micro", {}, ("a", "b"), (16, 16), (127.5,) * 3, (127.5,) * 3)
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    scales = {}
    for method in ("minmax", "entropy"):
        out = tmp_path / method
        out.mkdir()
        art = OnnxExporter().export(ExportJob(net, info, "int8", calib, out, "micro-int8", calib_method=method))
        assert art.details["calibration"] == method
        scales[method] = qdq_scales(out / art.path)[0]
    assert scales["minmax"].keys() == scales["entropy"].keys()
    assert any(not np.allclose(scales["minmax"][k], scales["entropy"][k], rtol=1e-6, atol=0) for k in scales["minmax"])


@pytest.mark.parametrize("spec,formats,precisions,expected", [
    ("onnx=percentile", ("onnx", "tflite", "coreml"), ("fp32", "int8"), {"onnx": "percentile", "tflite": "minmax"}),
    ("percentile,tflite=minmax", ("tflite", "onnx"), ("int8",), {"tflite": "minmax", "onnx": "percentile"}),
    (" entropy ", ("onnx", "coreml"), ("int8",), {"onnx": "entropy"}),
    ("entropy", ("onnx", "tflite"), ("fp32", "fp16"), {}),  # nothing is calibrated: the method applies to no file
])
def test_calib_method_per_format(spec, formats, precisions, expected):
    exporters = load_exporters(formats, precisions)
    assert calib_methods_for(spec, exporters, precisions) == expected


@pytest.mark.parametrize("args,match", [
    (("--formats", "onnx,tflite", "--calib-method", "entropy"),
     "--calib-method entropy: tflite int8 calibration offers only minmax, not entropy; use --calib-method onnx=entropy"),
    (("--formats", "onnx,tflite", "--calib-method", "tflite=percentile"), "choose minmax for tflite"),
    (("--formats", "onnx", "--calib-method", "mse"), "unknown calibration method 'mse'; choose from minmax, entropy, percentile"),
    (("--formats", "onnx,coreml", "--calib-method", "coreml=entropy"), "coreml files are never calibrated"),
    (("--formats", "onnx", "--precisions", "fp32,fp16", "--calib-method", "onnx=entropy"), "--precisions has no int8"),
    (("--formats", "onnx", "--calib-method", "tflite=minmax"), "tflite is not in --formats"),
])
def test_unsupported_calib_method_is_refused_before_any_work(cli, tiny_checkpoint, tmp_path, args, match):
    # Checked once the checkpoint's recipe (whose export: section fills the options not given) is read,
    # before any conversion: nothing is written.
    assert_refused(cli, "export", tiny_checkpoint, "--out", tmp_path / "out", *args, watch=[tmp_path], match=match)


def test_recipe_knows_every_method_an_exporter_offers():
    exporters = load_exporters(("onnx", "tflite", "coreml"), ("int8",))
    offered = {m for e in exporters.values() for m in e.calib_methods}
    assert offered == set(CALIB_METHODS) and ExportCfg.calib_method in exporters["tflite"].calib_methods
    assert recipe_from_dict({"export": {"calib_method": "entropy"}}).export.calib_method == "entropy"
    with pytest.raises(RecipeError, match="'export.calib_method' is 'mse'; it must be one of minmax, entropy, percentile"):
        recipe_from_dict({"export": {"calib_method": "mse"}})


@pytest.mark.parametrize("color,corrupt", [(0.3, 0.0), (0.0, 1.0)])
def test_calibration_images_follow_the_training_augmentations(color, corrupt):
    size, augment = (48, 48), AugmentCfg(color=color, corrupt=corrupt)
    plain = calibration_images(None, None, "portrait", 4, size, None)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = calibration_images(None, None, "portrait", 4, size, augment)
    assert torch.equal(torch.random.get_rng_state(), state), "calibration must not consume the global torch RNG"
    again = calibration_images(None, None, "portrait", 4, size, augment)
    assert all(np.array_equal(a, b) for a, b in zip(first.images, again.images))  # deterministic
    assert all(a.shape == b.shape and a.dtype == b.dtype == np.uint8 for a, b in zip(first.images, plain.images))
    assert sum(not np.array_equal(a, b) for a, b in zip(first.images, plain.images)) >= 3
    assert first.augment == {"color": color, "corrupt": corrupt, "seed": AUGMENT_SEED}
    assert "not augmented" in plain.source and plain.augment is None


def test_calibration_folder_and_recipe_without_photometric_steps_stay_as_they_are(tmp_path):
    from PIL import Image

    size = (32, 32)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    augment = AugmentCfg(color=0.5, corrupt=1.0)
    folder = calibration_images(str(tmp_path), None, "portrait", 3, size, augment)
    assert folder.augment is None and folder.source == str(tmp_path)
    assert all(np.array_equal(img, np.asarray(Image.open(tmp_path / f"{i}.png"))) for i, img in enumerate(folder.images))
    none = calibration_images(None, None, "portrait", 2, size, AugmentCfg(color=0.0, corrupt=0.0))
    plain = calibration_images(None, None, "portrait", 2, size, None)
    assert none.augment is None and "no colour or corruption step" in none.source
    assert all(np.array_equal(a, b) for a, b in zip(none.images, plain.images))


def test_calibration_from_the_training_data_reads_pixels_only_whatever_the_classes(tmp_path):
    """A checkpoint trained on 3+ classes could not be exported: calibration opened its data as two classes and
    refused the masks ('mask value 2 is outside the class range 0..1'). A folder named masks above --calib counts
    for nothing either (only masks/ inside it is left out)."""
    from edgeseg.data.synth import write_dataset
    from edgeseg.export.quant_images import calibration_images, images_in_folder

    data = write_dataset(tmp_path / "parts", "parts", 4, 32, seed=0)  # five classes
    calib = calibration_images(None, str(data), "parts", 2, (32, 32), None, 0.5)
    assert len(calib.images) == 2 and calib.source.startswith(f"{data} (train split)")
    nested = write_dataset(tmp_path / "masks" / "photos", "portrait", 3, 32, seed=0)
    assert len(images_in_folder(nested, 10, (32, 32))) == 3  # images/ only, not masks/


def test_calibration_says_when_the_checkpoints_training_data_is_not_here(tmp_path):
    """A checkpoint trained on a folder of another machine silently calibrated on the built-in set."""
    from edgeseg.export.quant_images import calibration_images

    calib = calibration_images(None, str(tmp_path / "elsewhere"), "portrait", 2, (32, 32))
    assert calib.source.startswith("built-in synthetic portrait calibration set")
    assert f"the checkpoint's training data {tmp_path / 'elsewhere'} is not on this machine; pass --calib DIR" in calib.source
