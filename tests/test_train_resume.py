"""Resuming a run goes on with the settings it was started with; a run that fails to write leaves nothing."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from edgeseg.errors import RecipeError
from edgeseg.models.checkpoint import load_checkpoint
from edgeseg.recipe import load_recipe
from edgeseg.train.loop import train

from conftest import assert_refused, one_line_error, tmpfs, tree_state, write_recipe


def _train(recipe_file: Path, out: Path, sets: list[str], *, resume: bool = False):
    """``edgeseg train --recipe RECIPE_FILE --out OUT [--resume] --set ...`` as the CLI calls the library."""
    return train(load_recipe(recipe_file, sets), out_dir=out, resume=resume, progress=False, overrides=sets)


def test_resume_goes_on_with_the_settings_the_run_was_started_with(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml")  # the file says: 1 epoch of 40 steps, batch 4
    out = tmp_path / "run"
    _train(recipe, out, ["train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=2"])
    # resumed from the same file without those --set options, extended by one epoch: 2 more steps of batch 2
    result = _train(recipe, out, ["train.epochs=3"], resume=True)
    ckpt = load_checkpoint(out / "last.pt")
    assert result.steps == 6 and ckpt.train_state["step"] == 6 and ckpt.train_state["epoch"] == 3
    stored = ckpt.recipe["train"]
    assert (stored["epochs"], stored["steps_per_epoch"], stored["batch_size"]) == (3, 2, 2)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("2", "4"), ("3", "6")]
    with pytest.raises(RecipeError, match=r"train\.steps_per_epoch=40 \(the run has 2\)"):
        _train(recipe, out, ["train.epochs=4", "train.steps_per_epoch=40"], resume=True)


def _copy_tiny_run(tiny_checkpoint: Path, run: Path) -> Path:
    run.mkdir()
    for name in ("best.pt", "last.pt", "metrics.csv"):
        shutil.copy(tiny_checkpoint.parent / name, run / name)
    return run


def test_resume_refuses_settings_that_differ_from_the_run(tiny_checkpoint, tmp_path, cli):
    run = _copy_tiny_run(tiny_checkpoint, tmp_path / "run")
    line = assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", run, "--resume",
                          "--set", "train.lr=0.5", "--set", "train.epochs=3", watch=[run])
    assert "train.lr=0.5 (the run has 0.01)" in line and "train.epochs" not in line.split("leave them out")[0]
    assert "new --out" in line


def test_resuming_a_finished_run_says_so_and_trains_nothing(tiny_checkpoint, tmp_path, cli):
    run = _copy_tiny_run(tiny_checkpoint, tmp_path / "run")
    before = tree_state(run)
    r = cli("train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", run, "--resume")
    assert r.exit_code == 0, r.output
    assert "already finished (epoch 1 of 1, step 40)" in r.output and "train.epochs" in r.output
    assert "nan" not in r.output and "img/s" not in r.output and "done: 40 steps" in r.output
    assert tree_state(run) == before


def test_a_run_that_cannot_write_its_checkpoints_leaves_nothing(tmp_path, cli):
    """A full disk at the end of the first epoch: no metrics.csv without checkpoints, no empty run folder."""
    full = tmp_path / "full"
    full.mkdir()
    recipe = write_recipe(tmp_path / "r.yaml", {"train": {"steps_per_epoch": 1}})
    # 64 KiB holds metrics.csv but not one tiny checkpoint (about 1 MB)
    with tmpfs(full, "size=64k", "a full disk is a tmpfs too small for a checkpoint"):
        r = cli("train", "--recipe", recipe, "--out", full / "run")
        assert r.exit_code == 2 and "No space left on device" in one_line_error(r.stderr), r.output
        assert list(full.iterdir()) == []  # so a rerun into the same --out is not refused as holding a run


def test_a_run_from_before_runs_recorded_their_data_resumes_on_the_data_given_now(tmp_path, cli):
    """Such a last.pt stores data.root None even when the run trained on --data: resuming it with the README's
    command was refused ('data.root=... (the run has None)'), and without --data it went on with the built-in set."""
    from edgeseg.models.checkpoint import save_checkpoint

    assert cli("data", "synth", tmp_path / "ds", "--count", "6", "--size", "64").exit_code == 0
    recipe = write_recipe(tmp_path / "r.yaml")
    out = tmp_path / "run"
    sets = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "data.val_fraction=0.5"]
    train(load_recipe(recipe, sets), out_dir=out, data_root=str(tmp_path / "ds"), progress=False, overrides=sets)
    ckpt = load_checkpoint(out / "last.pt")
    state = {k: v for k, v in ckpt.train_state.items() if k != "data_root_recorded"}
    old = {**ckpt.recipe, "data": {**ckpt.recipe["data"], "root": None}}
    save_checkpoint(out / "last.pt", ckpt.model(), ckpt.info, recipe=old, metrics=ckpt.metrics, train_state=state)
    result = train(load_recipe(recipe, ["train.epochs=2"]), out_dir=out, data_root=str(tmp_path / "ds"), resume=True,
                   progress=False, overrides=["train.epochs=2"])
    resumed = load_checkpoint(out / "last.pt")
    assert result.steps == 4 and resumed.recipe["data"]["root"] == str(tmp_path / "ds")
    assert resumed.train_state["data_root_recorded"] is True
