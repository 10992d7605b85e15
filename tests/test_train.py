"""Training end to end on CPU: CLI run, checkpoint contents, resume after kill -9, DDP (gloo)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeseg.models.checkpoint import load_checkpoint

from conftest import ROOT, prefetched, run_command, write_recipe


def test_train_writes_checkpoints_and_metrics(tiny_checkpoint: Path):
    run = tiny_checkpoint.parent
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.info.arch == "unet_mobilenet_v3_small" and ckpt.info.classes == ("background", "person")
    assert ckpt.info.input_size == (64, 64) and ckpt.info.mean == (127.5, 127.5, 127.5)
    assert ckpt.train_state["step"] == 40 and "optimizer" in ckpt.train_state
    assert ckpt.recipe["model"]["arch"] == "unet_mobilenet_v3_small" and "torch" in ckpt.versions
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert rows and {"miou", "boundary_iou", "iou_person"} <= set(rows[0])
    assert load_checkpoint(tiny_checkpoint).train_state is None


def test_train_on_folder_dataset(tmp_path, cli, monkeypatch):
    r = cli("data", "synth", tmp_path / "ds", "--count", "8", "--size", "64")
    assert r.exit_code == 0, r.output
    recipe = write_recipe(tmp_path / "r.yaml")
    monkeypatch.chdir(tmp_path)  # --data given relative to here
    r = cli("train", "--recipe", recipe, "--data", "ds", "--out", tmp_path / "run",
            "--set", "train.steps_per_epoch=2", "--set", "data.val_fraction=0.25")
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt.metrics["miou"] >= 0
    # the data the run used travels with it, absolute: export calibrates on it from any folder
    assert ckpt.recipe["data"]["root"] == str(tmp_path / "ds")
    from edgeseg.export.quant_images import calibration_images

    monkeypatch.chdir(ROOT)
    calib = calibration_images(None, ckpt.recipe["data"]["root"], "portrait", 2, (64, 64))
    assert calib.source.startswith(f"{tmp_path / 'ds'} (train split)"), calib.source
    # eval and export --data read the val split the run held out (with edgeseg's default 0.1, 8 images have none)
    from edgeseg.export.quant_images import parity_source
    from edgeseg.export.source import checkpoint_source

    assert ckpt.val_fraction == 0.25
    section = checkpoint_source(ckpt).model_section()  # the manifest records it: bench and eval of exported files too
    assert section["val_fraction"] == 0.25
    from edgeseg.manifest import Artifact, Manifest
    from edgeseg.runtime.loader import view_of_manifest

    art = Artifact(format="onnx", precision="fp32", path="m.onnx", bytes=1, sha256="0" * 64, input={}, output={})
    assert view_of_manifest(Manifest(model=section, tools={}), art).val_fraction == 0.25
    assert view_of_manifest(Manifest(model={**section, "val_fraction": "x"}, tools={}), art).val_fraction == 0.1
    source, _ = parity_source(str(tmp_path / "ds"), "portrait", 2, (64, 64), ckpt.info.classes,
                              checkpoint_source(ckpt).val_fraction)
    assert len(source) == 2
    r = cli("eval", tmp_path / "run" / "best.pt", "--data", tmp_path / "ds", "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["miou"] >= 0


def test_training_samples_from_image_files_are_writable(tmp_path, cli):
    """Decoded image files come as read-only arrays; the dataset copies them (torch warned about each)."""
    assert cli("data", "synth", tmp_path / "ds", "--count", "4", "--size", "64").exit_code == 0
    code = ("from edgeseg.data.datasets import open_source\n"
            "from edgeseg.data.transforms import SegDataset, eval_transform\n"
            f"ds = SegDataset(open_source({str(tmp_path / 'ds')!r}, 'train', val_fraction=0.5), eval_transform((64, 64)))\n"
            "image, mask = ds[0]\n"
            "assert image.shape == (3, 64, 64) and mask.shape == (64, 64)\n")
    r = run_command([sys.executable, "-W", "error::UserWarning", "-c", code])
    assert r.returncode == 0, r.stderr[-2000:]


def test_resume_after_kill_reaches_same_step_count(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {"train": {"epochs": 3, "steps_per_epoch": 3}})
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeseg.cli", "train", "--recipe", str(recipe), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(out / "last.pt").train_state["step"]
    assert killed_at < 9
    # the weights come from last.pt: starting weights named now are neither read nor downloaded (offline here)
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd + ["--resume", "--weights", "timm:mobilenetv3_small_050.lamb_in1k"], capture_output=True,
                       text=True, timeout=600, env=offline)
    assert r.returncode == 0, r.stderr
    state = load_checkpoint(out / "last.pt").train_state
    assert state["step"] == 9 and state["epoch"] == 3


def test_resume_without_checkpoint_exits_2(tmp_path, cli):
    r = cli("train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", tmp_path / "empty", "--resume")
    assert r.exit_code == 2 and "no " in r.stderr and "Traceback" not in r.output


@prefetched("ddp_run", seconds=9)
def _train_with_ddp(prefetch, folder):
    """Two gloo processes train the tiny recipe for 2 steps (run ahead, see conftest.prefetched)."""
    recipe = write_recipe(folder / "r.yaml", {"train": {"steps_per_epoch": 2}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = run_command([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                     "-m", "edgeseg.cli", "train", "--recipe", recipe, "--out", folder / "ddp"], env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return folder / "ddp"


@pytest.fixture
def ddp_run(prefetch):
    return prefetch.get("ddp_run")


def test_ddp_two_gloo_processes(ddp_run):
    state = load_checkpoint(ddp_run / "last.pt").train_state
    assert state["step"] == 2


def test_train_refuses_an_existing_run_without_resume_or_force(tiny_checkpoint, tmp_path, cli):
    from conftest import assert_refused

    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "last.pt", "metrics.csv"):
        (run / name).write_bytes((tiny_checkpoint.parent / name).read_bytes())
    recipe = write_recipe(tmp_path / "r.yaml")
    line = assert_refused(cli, "train", "--recipe", recipe, "--out", run, watch=[run])
    assert "already holds a run (best.pt, last.pt, metrics.csv)" in line and "--resume" in line and "--force" in line


def test_train_force_starts_over_and_keeps_other_files(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / "metrics.csv").write_text("epoch,step\n1,1\n2,2\n3,3\n")
    recipe = write_recipe(tmp_path / "r.yaml", {"train": {"steps_per_epoch": 2}})
    res = cli("train", "--recipe", recipe, "--out", run, "--force")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"] and rows[0]["miou"]  # started over, no stale rows
    assert (run / "notes.txt").read_text() == "mine" and (run / "best.pt").is_file()


def test_resume_and_force_together_are_refused(tmp_path, cli):
    from conftest import assert_refused

    assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", tmp_path / "run", "--resume",
                   "--force", watch=[tmp_path], match="give one of them")


def test_run_stopped_before_its_first_epoch_leaves_nothing(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {"train": {"steps_per_epoch": 2000}})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgeseg.cli", "train", "--recipe", str(recipe), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # without a terminal, training logs every 50th step: the model and data are built, the first epoch runs
    assert any("step 50/2000" in line for line in proc.stdout), "training ended before its 50th step"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert not out.exists()
