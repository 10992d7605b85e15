"""Model zoo: registry, shapes, input-size checks, weights from torchvision/timm files."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from edgeseg.errors import CheckpointError, EdgesegError, RecipeError
from edgeseg.models import registry
from edgeseg.models.profile import count_macs
from edgeseg.models.registry import ArchSpec, build_model, check_input_size, get_spec, names
from edgeseg.models.weights import load_weights

from conftest import ROOT, prefetched, run_command

REQUIRED = {"lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small", "unet_mobilenet_v3_small", "unet_mobilenetv4_conv_small",
            "unet_mobilenet_v3_small_minimal"}


def test_registry_lists_required_architectures():
    assert REQUIRED <= set(names())


def test_registering_a_name_twice_raises():
    spec = get_spec("unet_mobilenet_v3_small")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ArchSpec(spec.name, spec.builder, (64, 64), 32, "dup"))


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_forward_returns_logits_at_input_resolution(name):
    opts = {"width": 0.5} if name == "unet_mobilenet_v3_small" else {}
    model = build_model(name, num_classes=3, **opts).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 3, 64, 96)


def test_shorter_decoder_heads_at_stride_4_with_logits_at_input_resolution_and_fewer_macs():
    full = build_model("unet_mobilenetv4_conv_small", num_classes=2, width=0.35, decoder_channels=(16, 16, 8, 8)).eval()
    short = build_model("unet_mobilenetv4_conv_small", num_classes=2, width=0.35, decoder_channels=(16, 16, 8)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert tuple(short.decoder(short.encoder(x)).shape) == (1, 8, 16, 24)  # stride 4
        assert tuple(short(x).shape) == (1, 2, 64, 96)
    assert count_macs(short, 64, 96) < count_macs(full, 64, 96)
    # same module names as the full-length decoder, which keeps today's checkpoints loading
    assert set(short.state_dict()) < set(full.state_dict())


@pytest.mark.parametrize("decoder_channels", [(), (8, 8, 8, 8, 8)])
def test_decoder_channels_length_outside_one_per_skip_is_a_recipe_error(decoder_channels):
    with pytest.raises(RecipeError, match=rf"model\.decoder_channels has {len(decoder_channels)} entries; valid lengths are 1 to 4"):
        build_model("unet_mobilenet_v3_small", num_classes=2, width=0.5, decoder_channels=decoder_channels)


def test_minimal_mobilenet_v3_unet_has_only_integer_friendly_ops_and_the_default_models_stride_2_head():
    from edgeseg.models.checkpoint import PACKAGED, load_checkpoint

    model = build_model("unet_mobilenet_v3_small_minimal", num_classes=2)
    kinds = {type(m).__name__ for m in model.modules()}
    assert not kinds & {"Hardswish", "Hardsigmoid", "SqueezeExcite", "Conv2dSame"}
    assert len(model.decoder.blocks) == 4
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert tuple(model.decoder(model.encoder(x)).shape[-2:]) == (32, 32)  # stride 2
    # the architecture's defaults are the packaged default model's, so its int8 audit is the default model's
    info = load_checkpoint(PACKAGED["default"]).info
    assert (info.arch, info.options) == ("unet_mobilenet_v3_small_minimal", {"width": 1.0, "decoder_channels": [48, 32, 24, 16]})


def _concat_era(state: dict) -> dict:
    """A U-Net state dict in the up-block layout before the split: ``fuse`` = depthwise 3x3 + BN + ReLU +
    1x1 + BN over concat(upsampled, skip). (The split skip BN is dropped: it is BN(a + b) - BN(a).)"""
    blocks = sorted({k.split(".dw_up.")[0] + "." for k in state if ".dw_up." in k})
    old = {k: v for k, v in state.items() if not any(k.startswith(b) for b in blocks)}
    for b in blocks:
        old[b + "fuse.0.weight"] = torch.cat([state[b + "dw_up.0.weight"], state[b + "dw_skip.0.weight"]])
        old[b + "fuse.3.weight"] = torch.cat([state[b + "pw_up.0.weight"], state[b + "pw_skip.0.weight"]], 1)
        for key in ("weight", "bias", "running_mean", "running_var"):
            old[b + f"fuse.1.{key}"] = torch.cat([state[b + f"dw_up.1.{key}"], state[b + f"dw_skip.1.{key}"]])
            old[b + f"fuse.4.{key}"] = state[b + f"pw_up.1.{key}"]
        old[b + "fuse.1.num_batches_tracked"] = state[b + "dw_up.1.num_batches_tracked"]
        old[b + "fuse.4.num_batches_tracked"] = state[b + "pw_up.1.num_batches_tracked"]
    return old


def test_up_block_adds_instead_of_concatenating_and_loads_concat_era_weights_exactly():
    """The int8 graph has no concat to requantize in front of; weights saved when the block concatenated
    (the packaged models', older runs') load through both loaders and give the same outputs."""
    import torch.nn.functional as F

    from edgeseg.models.checkpoint import load_fitting
    from edgeseg.models.unet import UpBlock

    torch.manual_seed(0)
    cin, cskip, cout = 6, 4, 5
    c = cin + cskip
    fused = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), torch.nn.BatchNorm2d(c),
                                torch.nn.ReLU(), torch.nn.Conv2d(c, cout, 1, bias=False), torch.nn.BatchNorm2d(cout),
                                torch.nn.ReLU()).eval()
    with torch.no_grad():
        for bn in (fused[1], fused[4]):
            bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.normal_(), bn.bias.normal_()
    x, skip = torch.randn(2, cin, 4, 6), torch.randn(2, cskip, 8, 12)
    with torch.no_grad():
        expected = fused(torch.cat([F.interpolate(x, size=(8, 12), mode="bilinear", align_corners=False), skip], 1))
    old = {f"fuse.{k}": v for k, v in fused.state_dict().items()}

    direct, checked = UpBlock(cin, cskip, cout), UpBlock(cin, cskip, cout)
    direct.load_state_dict(old)  # strict: every key of the old layout used, every new key filled
    load_fitting(checked, old, "up-block", "re-save it")
    for block in (direct, checked):
        with torch.no_grad():
            assert torch.allclose(block.eval()(x, skip), expected, atol=1e-5)
    traced = torch.fx.symbolic_trace(direct)
    assert not [n for n in traced.graph.nodes if n.target in (torch.cat, torch.concat)]


def test_a_concat_era_last_pt_is_not_resumed_but_names_the_way_on(tmp_path, cli):
    from conftest import TINY, write_recipe
    from edgeseg.models.checkpoint import ModelInfo, save_checkpoint
    from edgeseg.recipe import load_recipe

    recipe = write_recipe(tmp_path / "r.yaml")
    options = {k: v for k, v in TINY["model"].items() if k != "arch"}
    model = build_model(TINY["model"]["arch"], num_classes=2, **options)

    class ConcatEra(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            return _concat_era(model.state_dict())

    run = tmp_path / "run"
    info = ModelInfo("tiny", TINY["model"]["arch"], options, ("background", "person"), (64, 64), (127.5,) * 3, (127.5,) * 3)
    save_checkpoint(run / "last.pt", ConcatEra(), info, recipe=load_recipe(recipe).to_dict(),
                    train_state={"epoch": 0, "step": 0, "best": {}, "optimizer": {}, "scheduler": {}})
    before = (run / "last.pt").read_bytes()
    r = cli("train", "--recipe", recipe, "--out", run, "--resume")
    assert r.exit_code == 2 and "written by an earlier edgeseg" in r.output and f"--weights {run / 'last.pt'}" in r.output
    assert (run / "last.pt").read_bytes() == before


def test_input_size_not_fitting_stride_names_a_valid_size():
    with pytest.raises(EdgesegError, match=r"250x250.*256x256"):
        check_input_size(get_spec("unet_mobilenet_v3_small"), 250, 250)
    with pytest.raises(EdgesegError, match="multiple of 32"):
        build_model("unet_mobilenet_v3_small", num_classes=2, input_size=(100, 64))


def test_unknown_option_and_architecture_are_errors():
    with pytest.raises(RecipeError, match="decoder_channels"):
        build_model("lraspp_mobilenet_v3_small", num_classes=2, decoder_channels=(8, 8))
    with pytest.raises(RecipeError, match="unknown architecture 'nope'"):
        get_spec("nope")


def test_torchvision_coco_voc_state_dict_loads_with_identical_outputs(tmp_path):
    ref = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    path = tmp_path / "lraspp_voc.pth"
    torch.save(ref.state_dict(), path)
    ours = build_model("lraspp_mobilenet_v3_large", num_classes=21).eval()
    assert load_weights(ours, path, get_spec("lraspp_mobilenet_v3_large").weight_prefixes) == "full model"
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x)["out"])


def test_torchvision_imagenet_backbone_loads_into_lraspp_backbone(tmp_path):
    cls = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "mnv3l_imagenet.pth"
    torch.save(cls.state_dict(), path)
    ours = build_model("lraspp_mobilenet_v3_large", num_classes=2)
    used = load_weights(ours, path, get_spec("lraspp_mobilenet_v3_large").weight_prefixes)
    assert used == "features.* -> backbone.*"
    assert torch.equal(ours.backbone["0"][0].weight, cls.features[0][0].weight)


def test_timm_classifier_checkpoint_loads_into_unet_encoder(tmp_path):
    import timm

    cls = timm.create_model("mobilenetv3_small_050", pretrained=False)
    path = tmp_path / "mnv3s050.pth"
    torch.save(cls.state_dict(), path)
    ours = build_model("unet_mobilenet_v3_small", num_classes=2, width=0.5)
    load_weights(ours, path, get_spec("unet_mobilenet_v3_small").weight_prefixes)
    assert torch.equal(ours.encoder.conv_stem.weight, cls.conv_stem.weight)


def test_timm_minimal_classifier_checkpoint_loads_into_its_unet_encoder(tmp_path):
    import timm

    cls = timm.create_model("tf_mobilenetv3_small_minimal_100", pretrained=False)
    path = tmp_path / "mnv3s_minimal.pth"
    torch.save(cls.state_dict(), path)
    ours = build_model("unet_mobilenet_v3_small_minimal", num_classes=2)
    load_weights(ours, path, get_spec("unet_mobilenet_v3_small_minimal").weight_prefixes)
    assert torch.equal(ours.encoder.blocks[2][0].conv_pw.weight, cls.blocks[2][0].conv_pw.weight)


def test_mismatched_weights_name_keys_and_shapes(tmp_path):
    ref = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    path = tmp_path / "voc21.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatch .*classifier\.(high|low)_classifier"):
        load_weights(build_model("lraspp_mobilenet_v3_large", num_classes=2), path, get_spec("lraspp_mobilenet_v3_large").weight_prefixes)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_weights(build_model("unet_mobilenet_v3_small", num_classes=2), path, get_spec("unet_mobilenet_v3_small").weight_prefixes)


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(torch.nn.Conv2d(1, 1, 1), path)  # a whole module needs unpickling code
    with pytest.raises(CheckpointError, match="weights-only"):
        load_weights(build_model("unet_mobilenet_v3_small", num_classes=2), path)


def test_models_command_lists_params_and_macs(cli):
    res = cli("models")
    assert res.exit_code == 0
    for name in REQUIRED:
        assert name in res.output
    assert "MACs" in res.output and "M" in res.output


# ---------------------------------------------------------------------------------------------
# int8 audit: is each architecture's int8 graph pure integer? Measured on exports, committed, shown by `edgeseg models`

AUDIT_ARCH = "unet_mobilenet_v3_small_minimal"  # the cheapest to export, and the all-integer one


def test_every_registered_architecture_has_an_int8_audit_entry():
    from edgeseg.models.report import int8_audit

    doc = int8_audit()
    assert set(doc["architectures"]) == set(names()), "re-run benchmarks/int8_audit.py and commit its file"
    assert doc["generated"] and {"torch", "litert-torch", "ai-edge-quantizer", "onnxruntime"} <= set(doc["tools"])


@prefetched("fresh_int8_audit", seconds=30)
def _measure_int8_audit(prefetch, folder):
    """``audit_architecture(AUDIT_ARCH)`` measured now, in a fresh process (run ahead: two real exports, ~30 s)."""
    code = ("import json, sys; from edgeseg.export.int8_audit import audit_architecture; "
            "json.dump(audit_architecture(sys.argv[1]), open(sys.argv[2], 'w'))")
    r = run_command([sys.executable, "-c", code, AUDIT_ARCH, folder / "audit.json"], cwd=folder)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((folder / "audit.json").read_text())


@pytest.fixture
def fresh_int8_audit(prefetch):
    return prefetch.get("fresh_int8_audit")


def test_committed_int8_audit_matches_a_fresh_measurement(fresh_int8_audit):
    from edgeseg.models.report import int8_audit

    fresh = fresh_int8_audit
    assert fresh == int8_audit()["architectures"][AUDIT_ARCH], "stale: re-run benchmarks/int8_audit.py and commit its file"
    assert fresh["tflite"]["pure_integer"] and fresh["tflite"]["qdq"]["float"] == 0 and not fresh["tflite"]["float_ops"]


class _HardswishNet(torch.nn.Module):
    """conv -> hardswish -> 1x1 conv -> upsample: one op XNNPACK cannot run in int8."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.Hardswish(), torch.nn.Conv2d(8, 2, 1))

    def forward(self, x):
        return torch.nn.functional.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_int8_audit_finds_the_float_island_of_a_hardswish():
    """A real export of a model with one hardswish: TFLite keeps HARD_SWISH float between a DEQUANTIZE and a
    QUANTIZE, ONNX leaves HardSigmoid float on ONNX Runtime's CPU provider and NNAPI rejects it."""
    import numpy as np

    from edgeseg.export.int8_audit import audit_export
    from edgeseg.models.checkpoint import ModelInfo

    torch.manual_seed(0)
    info = ModelInfo(name="hswish", arch="test-hardswish", options={}, classes=("a", "b"), input_size=(32, 32),
                     mean=(127.5,) * 3, std=(127.5,) * 3)
    calib = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(2)]
    audit = audit_export(_HardswishNet().eval(), info, calib)
    assert audit["tflite"]["float_ops"] == {"HARD_SWISH": 1} and audit["tflite"]["qdq"]["float"] == 2
    assert not audit["tflite"]["pure_integer"]
    assert "HardSigmoid" in audit["onnx"]["float_ops"] and audit["onnx"]["nnapi_rejects"] == ["HardSigmoid"]
    assert not audit["onnx"]["pure_integer"]


def test_models_command_shows_the_committed_int8_audit(cli, tmp_path):
    from edgeseg.models.report import NOT_MEASURED, int8_audit, int8_label, int8_verdict

    archs = int8_audit()["architectures"]
    assert int8_label(archs[AUDIT_ARCH], "tflite") == "pure" and int8_verdict(archs[AUDIT_ARCH]).startswith("TFLite pure")
    assert int8_verdict(None) == NOT_MEASURED
    # what is float, op and count, per format: 'ONNX float' alone read as if the whole int8 ONNX graph were float
    assert int8_verdict(archs["unet_mobilenet_v3_small_minimal"]) == "TFLite pure; ONNX float: Resize x5"
    assert int8_verdict(archs["unet_mobilenet_v3_small"]).startswith("TFLite float: HARD_SWISH x18; ONNX float: HardSigmoid x")
    hardswish_se = int8_label(archs["unet_mobilenet_v3_small"], "tflite")
    assert hardswish_se.startswith("float: HARD_SWISH x") and "Q/DQ hops" in hardswish_se
    assert "NNAPI rejects HardSigmoid" in int8_label(archs["unet_mobilenet_v3_small"], "onnx")
    assert int8_label(None, "tflite") == int8_label({"tflite": {}}, "onnx") == NOT_MEASURED
    res = cli("models", "--json", tmp_path / "models.json")
    assert res.exit_code == 0, res.output
    assert "int8 TFLite" in res.output and "int8 ONNX" in res.output and "pure" in res.output
    rows = json.loads((tmp_path / "models.json").read_text())["architectures"]
    assert {r["name"]: r["int8"] for r in rows} == archs
    # the README's table shows what the tool prints
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, entry in archs.items():
        assert f"| `{name}` |" in readme and f" | {int8_verdict(entry)} | " in readme, name


def _from_scripts(module: str):
    """``scripts/<module>.py``, imported (the repository's scripts are not a package)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def test_grow_decoder_copies_the_trained_blocks_and_starts_the_new_one_fresh(tmp_path):
    """scripts/grow_decoder.py (a step of make train-default): a stride-4 model grown by one up-block."""
    grow = _from_scripts("grow_decoder").grow
    from edgeseg.models.checkpoint import ModelInfo, save_checkpoint

    torch.manual_seed(1)
    options = {"width": 1.0, "decoder_channels": [8, 8, 8]}
    short = build_model("unet_mobilenet_v3_small_minimal", num_classes=2, **options)
    info = ModelInfo("short", "unet_mobilenet_v3_small_minimal", options, ("background", "person"), (64, 64),
                     (127.5,) * 3, (127.5,) * 3)
    save_checkpoint(tmp_path / "short.pt", short, info)
    copied, fresh = grow(str(tmp_path / "short.pt"), (8, 8, 8, 4), str(tmp_path / "grown.pt"))
    assert fresh and all(k.startswith(("decoder.blocks.3.", "head.")) for k in fresh)
    grown = build_model("unet_mobilenet_v3_small_minimal", num_classes=2, width=1.0, decoder_channels=(8, 8, 8, 4))
    assert load_weights(grown, tmp_path / "grown.pt") == "full model"
    kept = {k: v for k, v in short.state_dict().items() if not k.startswith("head.")}
    assert copied == len(kept) and all(torch.equal(grown.state_dict()[k], v) for k, v in kept.items())
    with pytest.raises(SystemExit, match="not a prefix"):
        grow(str(tmp_path / "short.pt"), (16, 8, 8, 4), str(tmp_path / "bad.pt"))


def test_fold_input_normalization_keeps_the_model_and_gives_it_one_integer_mean(tmp_path):
    """scripts/fold_input_normalization.py (a step of make train-default): the first conv absorbs the new
    normalization; its output is unchanged away from the zero-padded border, and so is the prediction."""
    import numpy as np

    from edgeseg.models.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
    from edgeseg.runtime.base import normalize_nhwc

    fold = _from_scripts("fold_input_normalization").fold
    torch.manual_seed(2)
    options = {"width": 1.0, "decoder_channels": [8, 8, 8]}
    model = build_model("unet_mobilenet_v3_small_minimal", num_classes=2, **options).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    imagenet = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    info = ModelInfo("m", "unet_mobilenet_v3_small_minimal", options, ("background", "person"), (64, 64), *imagenet)
    save_checkpoint(tmp_path / "m.pt", model, info, recipe={"data": {"task": "portrait"}})
    worst = fold(str(tmp_path / "m.pt"), 114, 58, str(tmp_path / "folded.pt"))
    assert worst == pytest.approx((114 - 103.53) / 57.375)  # blue: the largest offset
    folded = load_checkpoint(tmp_path / "folded.pt")
    assert folded.info.mean == (114.0,) * 3 and folded.info.std == (58.0,) * 3
    assert folded.recipe["data"] == {"task": "portrait", "mean": [114.0] * 3, "std": [58.0] * 3}
    new = folded.model().eval()

    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x_old, x_new = (torch.from_numpy(normalize_nhwc(pixels, m, s)).permute(0, 3, 1, 2) for m, s in (imagenet, ((114,) * 3, (58,) * 3)))
    with torch.no_grad():
        stem_old = model.encoder.bn1(model.encoder.conv_stem(x_old))
        stem_new = new.encoder.bn1(new.encoder.conv_stem(x_new))
        assert (stem_old - stem_new)[..., 1:, 1:].abs().max() < 1e-4  # the stem reads padding only at row/column 0
        assert (stem_old - stem_new)[..., 0, :].abs().max() > 1e-3
        agree = (model(x_old).argmax(1) == new(x_new).argmax(1)).float().mean()
    assert agree > 0.99
    with pytest.raises(SystemExit, match="integer in 0..255"):
        fold(str(tmp_path / "m.pt"), 127.5, 127.5, str(tmp_path / "bad.pt"))


def test_mobilenetv4_conv_small_at_the_widths_timm_publishes_no_model_for():
    """0.625 and 0.75 come from timm's MobileNetV4 generator (where ONNX Runtime's int8 starts to pay);
    they have no ImageNet weights, and other widths are still refused."""
    from edgeseg.models.profile import count_params
    from edgeseg.models.zoo import timm_imagenet

    params = {}
    for width in (0.5, 0.625, 0.75, 1.0):
        model = registry.build_model("unet_mobilenetv4_conv_small", num_classes=2, input_size=(64, 64), width=width,
                                     decoder_channels=[64, 48, 32]).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
        params[width] = count_params(model)
    assert params[0.5] < params[0.625] < params[0.75] < params[1.0]
    with pytest.raises(RecipeError, match=r"timm publishes no mobilenetv4_conv_small weights at model.width 0.625"):
        timm_imagenet("mobilenetv4_conv_small", {"width": 0.625})
    with pytest.raises(RecipeError, match=r"model.width 0.6 is not available .* \(or 0.625, 0.75, without ImageNet"):
        registry.build_model("unet_mobilenetv4_conv_small", num_classes=2, width=0.6, decoder_channels=[64, 48, 32])
