"""The parity reference an export stores (round trip, checks on read, subsets) and tool gaps: a file its
runtime cannot run fails its own parity with the reason, while the export keeps the other files and bench
fails the gate naming it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgeseg.bench import stored_reference
from edgeseg.bench.gate import compare, parity_failures
from edgeseg.bench.parity import ReferenceSet, check_parity
from edgeseg.bench.stored_reference import load_reference, store_reference
from edgeseg.errors import ArtifactError
from edgeseg.manifest import MANIFEST_NAME, Manifest, file_digest, read_manifest
from edgeseg.runtime.base import Runner

from conftest import assert_refused

H, W = 6, 8
MODEL = {"name": "m", "classes": ["background", "person"], "input": {"height": H, "width": W},
         "mean": [127.5] * 3, "std": [127.5] * 3}


def reference(n: int = 3) -> tuple[ReferenceSet, ReferenceSet]:
    """A parity set of ``n`` images (pixel (0, 0) of image 0 a near tie that float16 rounds away) and its
    stress set (two corruptions of each image, then two real-photo entries)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 2, H, W)).astype(np.float32)
    logits[0, :, 0, 0] = [1.0, 1.0001]  # fp32 argmax: class 1; float16: a tie, argmax 0
    ids = [f"synth_{i:06d}" for i in range(n)]
    ref = ReferenceSet(rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8), rng.integers(0, 2, (n, H, W), dtype=np.uint8),
                       ids, logits, ("background", "person"), "test set", {i: {"lighting": "dim"} for i in ids})
    stress_ids = [f"{i}:{c}" for i in ids for c in ("jpeg", "crop")] + ["grace_hopper:full", "grace_hopper:full:jpeg"]
    stress = ReferenceSet(rng.integers(0, 256, (len(stress_ids), H, W, 3), dtype=np.uint8), None, stress_ids,
                          rng.normal(size=(len(stress_ids), 2, H, W)).astype(np.float32), ref.classes, "stress")
    return ref, stress


def stored(tmp_path, ref, stress) -> Manifest:
    entry = store_reference(ref, stress, tmp_path)
    return Manifest(model=MODEL, tools={}, root=tmp_path, parity_reference=entry)


def test_round_trip_keeps_the_fp32_argmax_not_the_float16_one(tmp_path):
    ref, stress = reference()
    manifest = stored(tmp_path, ref, stress)
    assert (manifest.parity_reference["bytes"], manifest.parity_reference["sha256"]) == file_digest(
        tmp_path / "parity-reference.npz")
    back = load_reference(manifest)
    assert back.argmax[0, 0, 0] == 1 and back.logits.astype(np.float32).argmax(1)[0, 0, 0] == 0
    np.testing.assert_array_equal(back.argmax, ref.argmax)
    np.testing.assert_array_equal(back.images, ref.images)
    np.testing.assert_array_equal(back.masks, ref.masks)
    assert back.logits.dtype == np.float16 and np.abs(back.logits - ref.logits).max() < 1e-2
    assert back.ids == ref.ids and back.slices == ref.slices and back.description == "test set"
    np.testing.assert_array_equal(back.stress.images, stress.images)
    np.testing.assert_array_equal(back.stress.argmax, stress.argmax)
    assert back.stress.ids == stress.ids and back.stress.logits is None  # stress parity needs the argmax only


class Replay(Runner):
    """Returns fixed logits: a runner whose outputs the test chooses."""

    runtime = "replay"

    def __init__(self, logits):
        self.logits, self.i = logits, 0

    def run(self, images):
        out = self.logits[self.i:self.i + len(images)]
        self.i += len(images)
        return out


def test_logits_over_budget_are_left_out_and_parity_still_checks_agreement(tmp_path, monkeypatch):
    monkeypatch.setattr(stored_reference, "LOGITS_BUDGET", 0)
    ref, _ = reference()
    manifest = stored(tmp_path, ref, None)
    assert manifest.parity_reference["logits"] is None and manifest.parity_reference["stress_images"] == 0
    back = load_reference(manifest)
    assert back.logits is None and back.stress is None
    parity = check_parity(Replay(ref.logits), back, threshold=0.999)
    assert parity["agreement_miou"] == 1.0 and parity["passed"] is True
    assert parity["max_abs_logit_diff"] is None and parity["reference_logits"] is None


def test_head_keeps_the_stress_images_of_the_kept_images_and_the_real_photos():
    ref, stress = reference(3)
    ref.stress = stress
    sub = ref.head(2)
    assert sub.ids == ref.ids[:2] and len(sub.images) == len(sub.argmax) == len(sub.logits) == 2
    assert sub.stress.ids == [s for s in stress.ids if not s.startswith("synth_000002")]
    np.testing.assert_array_equal(sub.stress.images, stress.images[[0, 1, 2, 3, 6, 7]])
    assert ref.head(5) is ref


def rewrite(manifest: Manifest, **arrays) -> None:
    """Replace the stored file by one holding ``arrays`` and list its sha256 (a well-formed, wrong file)."""
    path = manifest.root / manifest.parity_reference["path"]
    np.savez_compressed(path, **arrays)
    manifest.parity_reference.update(zip(("bytes", "sha256"), file_digest(path)))


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("argmax"), "no 'argmax' array"),
    (lambda a: a.update(images=a["images"][:, :4]), "'images' is uint8 [3, 4, 8, 3], expected uint8 [Nx6x8x3]"),
    (lambda a: a.update(logits=a["logits"].astype(np.float32)), "'logits' is float32"),
    (lambda a: a.update(masks=a["masks"][:2]), "'masks' holds 2 entries, expected 3"),
    (lambda a: a.update(argmax=a["argmax"] + 2), "a stored prediction names a class beyond the model's 2"),
    (lambda a: a.pop("stress_ids"), "no 'stress_ids' array"),
])
def test_a_reference_that_does_not_fit_the_model_is_refused(tmp_path, change, match):
    ref, stress = reference()
    manifest = stored(tmp_path, ref, stress)
    with np.load(tmp_path / "parity-reference.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    rewrite(manifest, **arrays)
    with pytest.raises(ArtifactError, match="not a valid parity reference for this model") as caught:
        load_reference(manifest)
    assert match in str(caught.value) and str(caught.value).endswith("; re-export")


def test_a_reference_path_that_leaves_the_directory_is_refused_on_read(tmp_path):
    ref, _ = reference()
    manifest = stored(tmp_path, ref, None)
    manifest.parity_reference["path"] = "../parity-reference.npz"
    manifest.write(tmp_path)
    with pytest.raises(ArtifactError, match="'parity_reference' path '../parity-reference.npz' leaves the export"):
        read_manifest(tmp_path)


def test_gate_fails_rows_that_cannot_be_checked_and_names_each_reason():
    results = [
        {"artifact": "a.onnx", "threads": 1, "parity": {"passed": True, "agreement_miou": 1.0}},
        {"artifact": "b.onnx", "threads": 1, "parity": {"passed": False, "agreement_miou": 0.9, "threshold": 0.98}},
        {"artifact": "c.onnx", "threads": 1, "parity": {"passed": None, "unchecked": "no reference"}},
        {"artifact": "c.onnx", "threads": 2, "parity": {"passed": None, "unchecked": "no reference"}},
        {"artifact": "d.onnx", "threads": 1, "parity": {"passed": None, "unchecked": "no reference"}},
        {"artifact": "e.mlpackage", "threads": 1, "parity": {"passed": False, "error": "op 'tanh'", "runtime": "coreml"}},
        {"artifact": "phone.tflite", "threads": 1},  # phone results carry no parity
    ]
    assert parity_failures(results) == ["b.onnx: parity agreement 0.9 below 0.98",
                                         "c.onnx, d.onnx: parity not checked: no reference",
                                         "e.mlpackage: parity failed: coreml cannot run it (op 'tanh')"]
    base = {"results": [{**r, "format": "onnx", "precision": "fp32", "runtime": "ort", "latency_skipped": "x",
                         "parity": {"passed": True}} for r in results[2:3]]}
    gate = compare(base, {"results": [{**base["results"][0], "parity": results[2]["parity"]}]}, 1.15)
    assert gate.failures == ["onnx/fp32/ort/1t: parity not checked: no reference"]
    assert [row["status"] for row in gate.rows] == ["UNCHECKED"]


def test_export_never_replaces_a_users_file_named_like_the_reference(cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / "parity-reference.npz").write_bytes(b"the user's")
    assert_refused(cli, "export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32", "--force",
                   watch=[tmp_path], match="this export would replace parity-reference.npz, which edgeseg did not write")


# ---------------------------------------------------------------------------------------------
# Tool gaps are findings: a real Core ML file whose op the numpy reference interpreter lacks


class TanhSegmenter(nn.Module):
    """One conv and a tanh: ONNX Runtime runs it; edgeseg's Core ML reference interpreter has no 'tanh'."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return torch.tanh(self.conv(x)) * 4


@pytest.fixture(scope="module")
def gap_export(tmp_path_factory):
    pytest.importorskip("coremltools", reason="the Core ML export needs coremltools")
    import edgeseg

    out = tmp_path_factory.mktemp("gap") / "exp"
    with pytest.raises(edgeseg.ParityFailed) as caught:
        edgeseg.export_module(TanhSegmenter(), out, classes=["background", "person"], input_size=32, mean=[127.5] * 3,
                              std=[127.5] * 3, name="tanhseg", formats="onnx,coreml", precisions="fp32",
                              parity_images=2, stress="off")
    return out, caught.value


def test_a_file_its_interpreter_cannot_run_fails_alone_and_the_export_is_kept(gap_export):
    out, failed = gap_export
    assert failed.exit_code == 1  # a gate failure, not bad input (2)
    manifest = read_manifest(out)
    onnx, coreml = manifest.find("onnx", "fp32"), manifest.find("coreml", "fp32")
    assert onnx.parity["passed"] is True and onnx.verified_file().is_file()
    assert coreml.parity["passed"] is False and coreml.verified_file().is_dir()
    assert "Core ML op 'tanh'" in coreml.parity["error"] and "not supported by the numpy reference" in coreml.parity["error"]
    assert manifest.reference_file().is_file()
    assert {a.path for a in failed.manifest.artifacts} == {"tanhseg-fp32.onnx", "tanhseg-fp32.mlpackage"}


def test_bench_fails_the_gate_naming_the_file_its_runtime_cannot_run(gap_export, tmp_path, cli, monkeypatch):
    out, _ = gap_export
    monkeypatch.chdir(tmp_path)
    r = cli("bench", out, "--threads", "1", "--runs", "3", "--sessions", "1", "--warmup", "0",
            "--json", tmp_path / "bench.json")
    assert r.exit_code == 1, r.output[-4000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("FAILED", "error"))]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("FAILED: tanhseg-fp32.mlpackage: parity failed: coreml cannot run it (")
    assert "Core ML op 'tanh'" in lines[0]
    rows = {row["artifact"]: row for row in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert rows["tanhseg-fp32.onnx"]["parity"]["passed"] is True  # checked from the stored reference
    assert rows["pytorch-fp32"]["skipped"].startswith("not timed: the export records no checkpoint")
    assert (out / MANIFEST_NAME).is_file()


def test_a_failed_parity_names_the_check_that_failed():
    from edgeseg.bench.gate import parity_problem

    stress = {"passed": False, "agreement_miou": 0.99, "threshold": 0.98, "gt_miou": 0.9, "reference_gt_miou": 0.9,
              "max_gt_drop_points": 1.0, "stress": {"agreement_miou": 0.91, "threshold": 0.95, "passed": False, "gated": True}}
    assert parity_problem(stress) == "stress agreement 0.91 below 0.95"
    gt = {**stress, "gt_miou": 0.88, "stress": {**stress["stress"], "gated": False}}
    assert parity_problem(gt) == "GT mIoU 2.00 points below PyTorch's (at most 1.0)"
