"""Another architecture and a multi-class model through every format: a tiny 5-class LR-ASPP exported at fp32
and int8 (its own module, so the modules that need only the shared export do not wait for it)."""
from __future__ import annotations

import pytest

from edgeseg.manifest import read_manifest

from conftest import prefetched, run_edgeseg, write_recipe

FORMATS = ("onnx", "tflite", "coreml")

LRASPP = {"model": {"arch": "lraspp_mobilenet_v3_small", "width": 0.5, "inter_channels": 16, "decoder_channels": None}}


@prefetched("lraspp_export", seconds=65)
def _train_and_export_lraspp(prefetch, folder):
    """A tiny 5-class LR-ASPP (20 steps on the parts task) exported to every format at fp32 and int8 (run ahead,
    see conftest.prefetched): one export covers both another architecture and a multi-class model. Parity is
    computed and recorded; its int8 gate is opened (a 20-step, 5-class model's argmax is too unsure to gate on)."""
    recipe = write_recipe(folder / "r.yaml", {**LRASPP, "name": "lr", "data": {"task": "parts"},
                                              "train": {"steps_per_epoch": 20}})
    r = run_edgeseg("train", "--recipe", recipe, "--out", folder / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_edgeseg("export", folder / "run" / "best.pt", "--out", folder / "exp", "--precisions", "fp32,int8",
                    "--parity-images", "2", "--calib-count", "4", "--threshold", "int8=0.01", "--stress", "off")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return read_manifest(folder / "exp")


@pytest.fixture
def lraspp_export(prefetch):
    return prefetch.get("lraspp_export")


def test_lraspp_exports_to_every_format(lraspp_export):
    assert lraspp_export.model["architecture"] == "lraspp_mobilenet_v3_small" and len(lraspp_export.artifacts) == 6
    assert {(a.format, a.precision) for a in lraspp_export.artifacts} == {(f, p) for f in FORMATS for p in ("fp32", "int8")}
    for a in lraspp_export.artifacts:  # every file ran in its runtime and was compared
        assert a.parity["agreement_miou"] is not None
        if a.precision == "fp32":
            assert a.parity["passed"] and a.parity["agreement_miou"] > 0.99


def test_multiclass_parts_model_exports(lraspp_export):
    m = lraspp_export
    assert m.model["classes"] == ["background", "hair", "skin", "body", "clothes"]
    assert m.find("tflite", "fp32").output["shape"] == [1, 64, 64, 5]
