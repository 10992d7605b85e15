"""`edgeseg train` output ownership, normalization when fine-tuning, resuming without (or with another) recipe,
and shipped recipes by name: each refusal happens before any training, names the problem and the fix."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
import torch

from edgeseg.models.checkpoint import load_checkpoint

from conftest import ROOT, assert_refused, invoke_cli, write_recipe

RUN_FILES = ("best.pt", "last.pt", "metrics.csv")
# one optimizer step of the tiny recipe: what a refusal that came too late would train
QUICK = {"train": {"steps_per_epoch": 1, "batch_size": 2}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished one-step run of the tiny recipe (its files are edgeseg's); tests copy it before changing it."""
    folder = tmp_path_factory.mktemp("tiny_run")
    r = invoke_cli("train", "--recipe", write_recipe(folder / "tiny.yaml", QUICK), "--out", folder / "run")
    assert r.exit_code == 0, r.output
    return folder / "run"


# ---------------------------------------------------------------------------------------------
# 1, 2: only what an edgeseg run wrote is replaced, and never a folder


@pytest.mark.parametrize("name", RUN_FILES)
def test_force_refuses_a_folder_in_a_run_files_place_before_training(cli, tmp_path, name):
    run = tmp_path / "run"
    (run / name).mkdir(parents=True)
    (run / name / "k").write_text("k")
    line = assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml", QUICK), "--out", run, "--force",
                          watch=[run])
    assert f"{run / name} is a folder" in line and "never replaces a folder" in line and "choose another --out" in line


def test_force_never_replaces_files_an_edgeseg_run_did_not_write(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"w": torch.zeros(2)}, run / "best.pt")  # the user's own model: a plain state dict
    (run / "metrics.csv").write_text("epoch,val_loss\n1,0.5\n")  # another tool's log
    recipe = write_recipe(tmp_path / "r.yaml", QUICK)
    for flags in (("--force",), ()):
        line = assert_refused(cli, "train", "--recipe", recipe, "--out", run, *flags, watch=[run])
        assert "best.pt, metrics.csv are not edgeseg run files" in line and "move them away or choose another --out" in line
        assert "--force" not in line  # no advice that would overwrite them


def test_an_edgeseg_run_is_still_offered_force_and_force_replaces_it(cli, tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    recipe = write_recipe(tmp_path / "r.yaml", QUICK)
    line = assert_refused(cli, "train", "--recipe", recipe, "--out", run, watch=[run])
    assert "already holds a run (best.pt, last.pt, metrics.csv)" in line and "--force" in line
    before = (run / "last.pt").read_bytes()
    r = cli("train", "--recipe", recipe, "--out", run, "--force", "--set", "train.seed=1")
    assert r.exit_code == 0, r.output
    assert (run / "last.pt").read_bytes() != before


# ---------------------------------------------------------------------------------------------
# 3: fine-tuning an edgeseg checkpoint keeps the normalization it was trained with

FINE_TUNE_SETS = ("--set", "data.input_size=[64,64]", "--set", "train.steps_per_epoch=1", "--set", "train.batch_size=2",
                  "--set", "data.synth_val=2", "--set", "train.device=cpu", "--set", "train.amp=false")


def test_fine_tuning_the_packaged_default_keeps_its_mean_and_std(cli, tmp_path):
    """The shipped recipe sets no data.mean/std: the run took ImageNet's per-channel values, not the default's 114/58."""
    run = tmp_path / "run"
    r = cli("train", "--recipe", "portrait_unet_mnv3min_s2_256", "--weights", "default", "--out", run, *FINE_TUNE_SETS)
    assert r.exit_code == 0, r.output
    assert "note: --weights default was trained with mean [114, 114, 114], std [58, 58, 58]" in r.stdout
    assert "warning" not in r.stderr
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.info.mean == (114.0,) * 3 and ckpt.info.std == (58.0,) * 3
    assert ckpt.recipe["data"]["mean"] == [114.0] * 3  # recorded: a resume goes on with it
    # resumed with the same command (its recipe sets no mean/std), the run keeps them
    r = cli("train", "--recipe", "portrait_unet_mnv3min_s2_256", "--out", run, "--resume", *FINE_TUNE_SETS,
            "--set", "train.epochs=2")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run / "last.pt").info.mean == (114.0,) * 3


def test_fine_tuning_with_other_normalization_set_explicitly_warns(cli, tiny_run, tmp_path):
    """The tiny recipe sets mean/std 127.5; starting from a checkpoint trained with 127.5 says nothing, with
    other values the run uses them and says the weights were trained otherwise."""
    recipe = write_recipe(tmp_path / "r.yaml", {**QUICK, "data": {"mean": [120, 110, 100]}})
    r = cli("train", "--recipe", recipe, "--weights", tiny_run / "best.pt", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert (f"warning: --weights {tiny_run / 'best.pt'} was trained with mean [127.5, 127.5, 127.5], std [127.5, "
            "127.5, 127.5] (0-255 pixel units) but the recipe sets data.mean [120, 110, 100]") in r.stderr
    assert load_checkpoint(tmp_path / "run" / "best.pt").info.mean == (120.0, 110.0, 100.0)


# ---------------------------------------------------------------------------------------------
# 4: --resume goes on with the run's own recipe; another one is refused


def test_resume_without_recipe_goes_on_with_the_runs_own(cli, tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    r = cli("train", "--out", run, "--resume", "--set", "train.epochs=2")
    assert r.exit_code == 0, r.output
    state = load_checkpoint(run / "last.pt").train_state
    assert (state["epoch"], state["step"]) == (2, 2)


def test_resume_refuses_another_recipe_before_training(cli, tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    other = write_recipe(tmp_path / "other.yaml", {**QUICK, "name": "other", "data": {"task": "parts"}})
    line = assert_refused(cli, "train", "--recipe", other, "--out", run, "--resume", "--set", "train.epochs=2",
                          watch=[run])
    assert "name=other (the run has tiny)" in line and "data.task=parts (the run has portrait)" in line
    assert "without --recipe" in line and "new --out" in line and "train.epochs=2" not in line.split("; ")[0]


def test_train_without_recipe_names_what_to_give(cli, tmp_path):
    line = assert_refused(cli, "train", "--out", tmp_path / "run", watch=[tmp_path])
    assert "--recipe is needed" in line and "portrait_unet_mnv3min_s2_256" in line
    line = assert_refused(cli, "train", "--resume", watch=[tmp_path])
    assert "--out" in line


# ---------------------------------------------------------------------------------------------
# 5: shipped recipes by name, installed with the package


def test_missing_recipe_lists_the_shipped_names(cli, tmp_path):
    line = assert_refused(cli, "train", "--recipe", "portrait", "--out", tmp_path / "run", watch=[tmp_path])
    assert "recipe file not found: portrait" in line
    assert all(name in line for name in ("portrait_unet_mnv3min_s2_256", "parts_unet_256", "voc_lraspp_mnv3l_512"))


def test_shipped_recipes_are_installed_where_the_name_lookup_reads_them():
    """The wheel installs recipes/*.yaml (data-files) under the folder bundled_recipes reads in an installed copy;
    in a checkout the names map to the repository's files."""
    from edgeseg.recipe import BUNDLED_RECIPES_DIR, bundled_recipes

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["data-files"]["/".join(BUNDLED_RECIPES_DIR)] == ["recipes/*.yaml"]
    assert bundled_recipes() == {p.stem: p for p in sorted((ROOT / "recipes").glob("*.yaml"))}


def test_resume_with_the_recipe_file_keeps_the_data_folder_the_run_was_given(cli, tmp_path):
    """A run started with --data A from a recipe whose data.root is B: resuming with that --recipe (no --data)
    silently moved the run to B. The recipe file's data.root is compared; only --data moves a run."""
    import numpy as np
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name / "images").mkdir(parents=True)
        (tmp_path / name / "masks").mkdir()
        for i in range(10):
            Image.fromarray(np.full((64, 64, 3), 20 * i, np.uint8)).save(tmp_path / name / "images" / f"{i}.png")
            Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 2).astype(np.uint8)).save(tmp_path / name / "masks" / f"{i}.png")
        (tmp_path / name / "classes.txt").write_text("background\nperson\n")
    recipe = write_recipe(tmp_path / "r.yaml", {**QUICK, "data": {"root": str(tmp_path / "b")}})
    run = tmp_path / "run"
    r = cli("train", "--recipe", recipe, "--out", run, "--data", tmp_path / "a")
    assert r.exit_code == 0, r.output
    line = assert_refused(cli, "train", "--recipe", recipe, "--out", run, "--resume", "--set", "train.epochs=2",
                          watch=[run])
    assert f"data.root={tmp_path / 'b'}" in line and f"(the run has {tmp_path / 'a'})" in line
    r = cli("train", "--out", run, "--resume", "--set", "train.epochs=2")  # without --recipe: its own folder
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run / "last.pt").recipe["data"]["root"] == str(tmp_path / "a")


def test_a_run_saved_before_runs_recorded_their_data_needs_data_or_its_recipe(cli, tiny_run, tmp_path):
    """Such a run stored data.root None whatever it trained on: `train --out RUN --resume` (the README's form)
    resumed it on the built-in synthetic set without a word."""
    from edgeseg.train.resume import DATA_ROOT_RECORDED

    run = shutil.copytree(tiny_run, tmp_path / "run")
    payload = torch.load(run / "last.pt", weights_only=True)
    del payload["train_state"][DATA_ROOT_RECORDED]
    torch.save(payload, run / "last.pt")
    line = assert_refused(cli, "train", "--out", run, "--resume", "--set", "train.epochs=2", watch=[run])
    assert "was saved before runs recorded their data folder; give --data DIR" in line
