"""Export pipeline behaviour shared by all formats: manifest, atomicity, exit codes 1 and 2."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeseg.manifest import file_digest, read_manifest

from conftest import copy_export, one_line_error, prefetched, run_edgeseg, run_edgeseg_without, signal_an_export

MANIFEST_MODEL_KEYS = {"name", "architecture", "classes", "input", "mean", "std", "params", "macs", "checkpoint", "stabilizer"}
ARTIFACT_KEYS = {"format", "precision", "path", "bytes", "sha256", "input", "output", "parity", "quantized"}
PARITY_KEYS = {"reference", "images", "agreement_miou", "gt_miou", "reference_gt_miou", "max_abs_logit_diff", "runtime",
               "threshold", "passed"}


SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}


def test_manifest_has_design_fields(shared_export, tiny_checkpoint):
    out = shared_export.dir  # every format x precision, from the session's export (read-only)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["schema_version"] == 1 and MANIFEST_MODEL_KEYS <= set(raw["model"])
    assert raw["model"]["mean"] == [127.5] * 3 and raw["model"]["input"] == {"height": 64, "width": 64}
    assert {"torch", "onnxruntime", "edgeseg"} <= set(raw["tools"])
    assert [(a["format"], a["precision"]) for a in raw["artifacts"]] == [
        (f, p) for f in ("onnx", "tflite", "coreml") for p in ("fp32", "fp16", "int8")]
    for a in raw["artifacts"]:
        assert ARTIFACT_KEYS <= set(a) and PARITY_KEYS <= set(a["parity"])
        assert a["path"] == f"tiny-{a['precision']}{SUFFIX[a['format']]}"
        assert (a["bytes"], a["sha256"]) == file_digest(out / a["path"])
        assert a["parity"]["passed"] is True
    onnx = [a for a in raw["artifacts"] if a["format"] == "onnx"]
    for a in onnx:
        assert a["input"]["layout"] == "NCHW" and a["input"]["expects"] == "normalized"
        assert a["parity"]["runtime"] == "onnxruntime"
    assert onnx[2]["details"]["activation_type"] == "uint8"


def test_export_prints_table(shared_export):
    assert "agreement mIoU" in shared_export.stdout and "PASS" in shared_export.stdout
    assert "max |Δlogit|" in shared_export.stdout
    assert "int8 calibration: built-in synthetic portrait calibration set" in shared_export.stdout


def test_new_export_folder_gets_a_normal_mode(shared_export):
    from edgeseg.fsutil import folder_mode

    assert shared_export.dir.stat().st_mode & 0o777 == folder_mode()


def test_rerun_replaces_only_what_the_earlier_export_wrote(tiny_checkpoint, shared_export, tmp_path, cli):
    out = copy_export(shared_export.dir, tmp_path / "e")  # the earlier export: every format x precision
    (out / "stray.txt").write_text("the user's")
    out.chmod(0o750)
    r = cli("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32", "--parity-images", "2",
            "--stress", "off")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "parity-reference.npz", "stray.txt", "tiny-fp32.onnx"]
    assert (out / "stray.txt").read_text() == "the user's" and out.stat().st_mode & 0o777 == 0o750


def test_rerun_keeps_or_refuses_exported_files_the_user_changed(tiny_checkpoint, shared_export, tmp_path, cli):
    from conftest import assert_refused

    out = copy_export(shared_export.dir, tmp_path / "e")
    (out / "tiny-int8.onnx").write_bytes(b"hand-tuned")  # listed by the earlier manifest, changed since
    (out / "tiny-fp32.onnx").write_bytes(b"hand-tuned too")
    args = ("--parity-images", "2", "--stress", "off", "--formats", "onnx", "--precisions")
    # this export would write tiny-fp32.onnx: refused before any work, nothing changed
    assert_refused(cli, "export", tiny_checkpoint, "--out", out, *args, "fp32", watch=[tmp_path],
                   match="tiny-fp32.onnx changed since edgeseg exported it")
    (out / "tiny-fp32.onnx").unlink()
    # it does not write tiny-int8.onnx: the changed file stays (an unchanged one it no longer writes goes)
    r = cli("export", tiny_checkpoint, "--out", out, *args, "fp32")
    assert r.exit_code == 0, r.output
    assert (out / "tiny-int8.onnx").read_bytes() == b"hand-tuned"
    assert not (out / "tiny-fp16.onnx").exists() and not (out / "tiny-int8.tflite").exists()


def _users_assets(root: Path) -> Path:
    assets = root / "app" / "src" / "main" / "assets"
    (assets / "fonts").mkdir(parents=True)
    (assets / "fonts" / "a.ttf").write_bytes(b"font")
    (assets / "config.json").write_text("{}")
    return assets


def test_export_refuses_a_users_folder(tiny_checkpoint, tmp_path, cli):
    from conftest import assert_refused

    assets = _users_assets(tmp_path)
    line = assert_refused(cli, "export", tiny_checkpoint, "--out", assets, "--formats", "onnx", watch=[tmp_path])
    assert "config.json, fonts" in line and "--force" in line


def test_export_refuses_to_replace_a_file_no_export_listed(tiny_checkpoint, tmp_path, cli):
    from conftest import assert_refused

    out = tmp_path / "e"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"schema_version": 1, "model": {}, "artifacts": []}))
    (out / "tiny-fp32.onnx").write_bytes(b"the user's own model")
    for force in ((), ("--force",)):
        assert_refused(cli, "export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32", *force,
                       watch=[tmp_path], match="this export would replace tiny-fp32.onnx, which edgeseg did not write; move or rename it")


def test_export_force_never_replaces_a_users_manifest_or_folder(tiny_checkpoint, tmp_path, cli):
    from conftest import assert_refused

    out = tmp_path / "pwa"
    (out / "tiny-fp32.onnx").mkdir(parents=True)
    (out / "tiny-fp32.onnx" / "keep.txt").write_text("keep")
    (out / "manifest.json").write_text('{"name": "My PWA"}')
    assert_refused(cli, "export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32", "--force",
                   watch=[tmp_path], match="this export would replace manifest.json, tiny-fp32.onnx, which edgeseg did not write")


def test_export_force_writes_beside_the_users_files(tiny_checkpoint, tmp_path, cli):
    from conftest import tree_state

    assets = _users_assets(tmp_path)
    before = tree_state(assets / "fonts", assets / "config.json")
    r = cli("export", tiny_checkpoint, "--out", assets, "--formats", "onnx", "--precisions", "fp32",
            "--parity-images", "2", "--stress", "off", "--force")
    assert r.exit_code == 0, r.output
    assert tree_state(assets / "fonts", assets / "config.json") == before
    assert read_manifest(assets).artifacts[0].path == "tiny-fp32.onnx" and (assets / "tiny-fp32.onnx").is_file()


def test_interrupted_export_leaves_previous_output_intact(shared_export, tiny_checkpoint, tmp_path, cli):
    from edgeseg.fsutil import is_staging

    # the previous output: an ONNX fp32 export (copied from the session's export)
    out = copy_export(shared_export.dir, tmp_path / "e", keep=[("onnx", "fp32")])
    before = {p.name: file_digest(p) for p in out.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "edgeseg.cli", "export", str(tiny_checkpoint), "--out", str(out),
                             "--formats", "onnx", "--precisions", "fp32,fp16,int8", "--parity-images", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "exported" in proc.stdout.readline()  # first file written into staging
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {p.name: file_digest(p) for p in out.iterdir() if not is_staging(p)} == before
    assert [p for p in out.iterdir() if is_staging(p)]  # the dead run's staging folder, hidden
    assert not any(p.name.endswith(".onnx") for p in tmp_path.iterdir())
    # the next run cleans the dead run's staging folder up
    assert cli("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "fp32",
               "--parity-images", "2", "--stress", "off").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "parity-reference.npz", "tiny-fp32.onnx"]


def test_parity_failure_exits_1_and_keeps_files(tiny_checkpoint, tmp_path, cli):
    out = tmp_path / "e"
    # int8 of a 40-step model (small logit margins) flips some pixels, so demanding exact agreement fails
    r = cli("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "int8",
            "--parity-images", "4", "--calib-count", "4", "--threshold", "int8=1", "--stress", "off")
    assert r.exit_code == 1, r.output
    m = read_manifest(out)
    assert m.artifacts[0].parity["agreement_miou"] < 1 and m.artifacts[0].parity["passed"] is False
    assert (out / "tiny-int8.onnx").is_file()
    assert "FAILED" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--formats", "onnx", "--precisions", "pal6"], "onnx export does not support precision 'pal6'"),
    (["--formats", "caffe"], "unknown format 'caffe'"),
    (["--calib", "/nonexistent/calib"], "calibration folder not found"),
    (["--formats", ","], "--formats is empty"),
    (["--precisions", "fp32,fp32"], "--precisions lists fp32 more than once"),
    (["--formats", "onnx,onnx"], "--formats lists onnx more than once"),
    (["--threshold", "int8=1.5"], "must be in (0, 1]"),
    (["--threshold", "int8=nan"], "must be in (0, 1]"),
    (["--threshold", "int8=-5"], "must be in (0, 1]"),
    (["--threshold", "in8=0.5"], "unknown precision 'in8'"),
    (["--threshold", "int8"], "expects PRECISION=NUMBER"),
])
def test_bad_usage_exits_2(tiny_checkpoint, tmp_path, cli, args, needle):
    from conftest import assert_refused

    assert_refused(cli, "export", tiny_checkpoint, "--out", tmp_path / "e", *args, watch=[tmp_path], match=needle)


def test_bad_output_locations_exit_2(tiny_checkpoint, tmp_path, cli, read_only_dir):
    from conftest import assert_refused

    (tmp_path / "f").write_text("x")
    assert_refused(cli, "export", tiny_checkpoint, "--out", tmp_path / "f", watch=[tmp_path], match="is a file")
    assert_refused(cli, "export", tiny_checkpoint, "--out", tmp_path / "f" / "e", watch=[tmp_path], match="is a file")
    assert_refused(cli, "export", tiny_checkpoint, "--out", read_only_dir / "e", watch=[read_only_dir], match="not writable")


def test_bad_checkpoints_exit_2(tmp_path, cli, tiny_checkpoint):
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    for path, needle in ((tmp_path / "missing.pt", "checkpoint not found"), (truncated, "cannot be read"),
                         (foreign, "not an edgeseg checkpoint")):
        res = cli("export", path, "--out", tmp_path / "e", "--formats", "onnx")
        assert res.exit_code == 2 and needle in one_line_error(res.output)


def test_missing_extra_names_the_extra(tiny_checkpoint, tmp_path):
    r = run_edgeseg_without("coremltools", tmp_path, "export", tiny_checkpoint, "--out", tmp_path / "e", "--formats", "coreml")
    assert r.returncode == 2
    assert "pip install 'edgeseg[coreml]'" in one_line_error(r.stderr)


@prefetched("ctrl_c_export", seconds=10)
def _interrupt_an_export(prefetch, folder):
    """``edgeseg export`` sent SIGINT (Ctrl-C) once its first file is written into staging (run ahead: ~10 s)."""
    return signal_an_export(prefetch.get("tiny_checkpoint"), folder / "e", signal.SIGINT)


@prefetched("sigterm_export", seconds=10)
def _terminate_an_export(prefetch, folder):
    """The same with SIGTERM (a cancelled CI job), which killed the process outright (exit -15), leaving its
    .edgeseg-staging-<pid>-* folder beside --out."""
    return signal_an_export(prefetch.get("tiny_checkpoint"), folder / "new", signal.SIGTERM, "--stress", "off")


@pytest.fixture
def ctrl_c_export(prefetch):
    return prefetch.get("ctrl_c_export")


@pytest.fixture
def sigterm_export(prefetch):
    return prefetch.get("sigterm_export")


def test_ctrl_c_and_sigterm_exit_130_and_143_with_one_line_and_no_export(ctrl_c_export, sigterm_export):
    for run, code, line in ((ctrl_c_export, 130, "interrupted"), (sigterm_export, 143, "terminated")):
        assert "exported" in run["first"], run  # stopped after its first file was written into staging
        assert run["code"] == code, run["stderr"]
        assert run["stderr"].strip().splitlines()[-1] == line and "Traceback" not in run["stderr"]
        assert not run["out_exists"]  # nothing half-written where the export was going
        assert run["left"] == []  # and the staging folder is gone


STRESS_KEYS = {"agreement_miou", "images", "corruptions", "threshold", "passed", "per_corruption", "gated", "real_photos"}


def test_stress_parity_is_recorded_for_every_file(shared_export):
    from edgeseg.data.corruptions import CORRUPTIONS

    for a in shared_export.manifest.artifacts:
        stress = a.parity["stress"]
        assert STRESS_KEYS <= set(stress) and stress["gated"] is True  # the default: gated
        # 4 parity images: 8 corrupted copies and 4 real-photo images (2 clean crops, 2 corrupted)
        assert set(stress["corruptions"]) <= set(CORRUPTIONS) and len(stress["corruptions"]) >= 8
        assert stress["real_photos"] == 2 and stress["images"] == 4 * 2 + 4 and 0 <= stress["agreement_miou"] <= 1
        assert stress["threshold"] == {"fp32": 0.999, "fp16": 0.99, "int8": 0.7}[a.precision]  # int8: SHARED_EXPORT_ARGS
    assert "stress agreement" in shared_export.stdout


def test_broken_calibration_fails_stress_parity_when_gated(tiny_checkpoint, tmp_path, cli):
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):  # flat grey frames: every activation range collapses
        Image.new("RGB", (64, 64), (128, 128, 128)).save(calib / f"{i}.png")
    out = tmp_path / "e"
    r = cli("export", tiny_checkpoint, "--out", out, "--formats", "onnx", "--precisions", "int8", "--calib", calib,
            "--parity-images", "4", "--threshold", "int8=0.01", "--stress", "gate")
    assert r.exit_code == 1, r.output
    stress = read_manifest(out).artifacts[0].parity["stress"]
    assert stress["gated"] is True and stress["passed"] is False and stress["agreement_miou"] < 0.95
    assert "LOW" in r.stdout


def _with_export_section(checkpoint: Path, dest: Path, section: dict) -> Path:
    """A copy of ``checkpoint`` whose training recipe carries ``section`` as its ``export:`` defaults."""
    from edgeseg.models.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoint)
    return save_checkpoint(dest, ckpt.model(), ckpt.info, recipe={**ckpt.recipe, "export": section})


def test_the_checkpoints_recipe_export_section_sets_the_defaults_and_flags_override_it(tiny_checkpoint, tmp_path, cli):
    ckpt = _with_export_section(tiny_checkpoint, tmp_path / "ckpt.pt", {
        "formats": ["onnx"], "precisions": ["fp32", "fp16"], "parity_images": 3, "calib_count": 2,
        "thresholds": {"fp16": 0.9}, "stress": "off"})
    result = cli("export", ckpt, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "a")
    assert [(a.format, a.precision) for a in manifest.artifacts] == [("onnx", "fp32"), ("onnx", "fp16")]
    assert manifest.parity_reference["thresholds"]["fp16"] == 0.9, "the recipe's threshold"
    assert manifest.parity_reference["thresholds"]["fp32"] == 0.999, "a precision the recipe does not name: the default"
    assert all(a.parity["images"] == 3 and "stress" not in a.parity for a in manifest.artifacts)

    result = cli("export", ckpt, "--out", tmp_path / "b", "--precisions", "fp32", "--parity-images", 2,
                 "--threshold", "fp32=0.99")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "b")
    assert [(a.format, a.precision, a.parity["images"]) for a in manifest.artifacts] == [("onnx", "fp32", 2)]
    assert manifest.parity_reference["thresholds"]["fp32"] == 0.99 and manifest.parity_reference["thresholds"]["fp16"] == 0.9


def test_a_bad_recipe_export_section_is_refused_naming_the_checkpoint(tiny_checkpoint, tmp_path, cli):
    ckpt = _with_export_section(tiny_checkpoint, tmp_path / "ckpt.pt", {"formats": ["onnx", "gif"]})
    result = cli("export", ckpt, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "ckpt.pt: its training recipe key 'export.formats'" in result.output
    assert not (tmp_path / "out").exists()


def test_export_folds_the_converters_output_into_its_own_lines(shared_export):
    out, err = shared_export.stdout, shared_export.stderr
    for noise in ("Running MIL", "Converting PyTorch Frontend", "LiteRT-Torch Convert", "absl::InitializeLog"):
        assert noise not in out and noise not in err, noise
    assert "  exported tiny-int8.tflite (" in out and "KB), parity ok" in out


def test_export_verbose_shows_the_converters_output(tiny_checkpoint, tmp_path, cli):
    r = cli("export", tiny_checkpoint, "--out", tmp_path / "out", "--formats", "coreml", "--precisions", "fp32",
            "--parity-images", "2", "--stress", "off", "--verbose")
    assert r.exit_code == 0, r.output[-2000:]
    assert "Running MIL" in r.output and "  exported tiny-fp32.mlpackage (" in r.stdout


def test_folded_output_replays_the_log_only_when_the_block_crashes(capfd):
    from edgeseg.ui import folded_output

    with folded_output() as progress:
        os.write(2, b"c++ log line\n")
        print("library warning", file=sys.stderr)
        print("  exported a.onnx", file=progress)
    captured = capfd.readouterr()
    assert "c++ log line" not in captured.err + captured.out and "library warning" not in captured.err
    assert "  exported a.onnx" in captured.out

    with pytest.raises(RuntimeError), folded_output(keep=(ValueError,)):
        os.write(2, b"c++ log before the crash\n")
        raise RuntimeError("converter crashed")
    assert "c++ log before the crash" in capfd.readouterr().err

    with pytest.raises(ValueError), folded_output(keep=(ValueError,)):
        os.write(2, b"expected failure noise\n")
        raise ValueError("bad input")
    assert "expected failure noise" not in capfd.readouterr().err
