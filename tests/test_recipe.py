"""Recipes: shipped files load, unknown keys and bad values are errors, --set overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.errors import RecipeError
from edgeseg.recipe import RULES, load_recipe, recipe_fields, recipe_from_dict

from conftest import ROOT, assert_refused, one_line_error, write_recipe


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    r = load_recipe(path)
    assert r.name == path.stem and r.model.arch


def test_required_recipes_exist():
    names = {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert {"portrait_unet_mnv3min_s2_256.yaml", "portrait_unet_mnv3s_256.yaml", "parts_unet_256.yaml", "voc_lraspp_mnv3l_512.yaml"} <= names


def test_unknown_key_is_named():
    with pytest.raises(RecipeError, match="unknown recipe key 'train.epochz'"):
        recipe_from_dict({"train": {"epochz": 3}})


def test_overrides_and_types():
    r = recipe_from_dict({}, ["train.epochs=3", "model.decoder_channels=[8,8,8,8]", "data.input_size=[128,96]"])
    assert r.train.epochs == 3 and r.model.decoder_channels == (8, 8, 8, 8) and r.data.input_size == (128, 96)
    with pytest.raises(RecipeError, match="train.epochs.*int"):
        recipe_from_dict({}, ["train.epochs=lots"])
    with pytest.raises(RecipeError, match="key=value"):
        recipe_from_dict({}, ["train.epochs"])


def test_recipe_is_frozen():
    r = recipe_from_dict({})
    with pytest.raises(Exception):
        r.train.epochs = 5  # type: ignore[misc]


def test_cli_unknown_recipe_key_exits_2(cli, tmp_path: Path):
    recipe = write_recipe(tmp_path / "bad.yaml", {"train": {"learning_rate": 0.1}})
    res = cli("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert res.exit_code == 2
    assert "train.learning_rate" in one_line_error(res.output)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cli_missing_recipe_exits_2(cli, tmp_path):
    res = cli("train", "--recipe", tmp_path / "nope.yaml")
    assert res.exit_code == 2 and "recipe file not found" in one_line_error(res.output)


# ---------------------------------------------------------------------------------------------
# Out-of-range values: refused when the recipe is loaded, before any data is read or file written

OUT_OF_RANGE = [
    ("train.lr=nan", "'train.lr' is nan"), ("train.lr=-1", "'train.lr' is -1.0"), ("train.lr=.inf", "'train.lr' is inf"),
    ("train.epochs=0", "'train.epochs' is 0"), ("train.batch_size=0", "'train.batch_size' is 0"),
    ("train.workers=-1", "'train.workers' is -1"), ("train.steps_per_epoch=0", "'train.steps_per_epoch' is 0"),
    ("train.weight_decay=-0.1", "'train.weight_decay'"), ("train.weight_decay=nan", "'train.weight_decay'"),
    ("train.dice_weight=-1", "'train.dice_weight'"), ("train.seed=-1", "'train.seed'"),
    ("train.device=gpu", "auto, cpu, cuda, cuda:N or mps"), ("train.amp=maybe", "'train.amp' must be true/false"),
    ("data.synth_train=0", "'data.synth_train' is 0"), ("data.synth_val=0", "'data.synth_val' is 0"),
    ("data.std=[0,0,0]", "'data.std' is [0.0, 0.0, 0.0]"), ("data.std=[1,nan,1]", "'data.std'"),
    ("data.mean=[1,2,.inf]", "'data.mean'"), ("data.mean=[1,2]", "'data.mean' must have 3 values"),
    ("data.input_size=[0,64]", "'data.input_size' is [0, 64]"), ("data.val_fraction=0", "'data.val_fraction' is 0.0"),
    ("data.val_fraction=1", "'data.val_fraction' is 1.0"), ("data.classes=[a,a]", "'data.classes'"),
    ("data.classes=[person]", "'data.classes'"), ("data.seed=-1", "'data.seed'"), ("data.train_split=''", "'data.train_split'"),
    ("data.augment.scale=[1.3,0.7]", "'data.augment.scale'"), ("data.augment.rotate=-5", "'data.augment.rotate'"),
    ("data.augment.color=2", "'data.augment.color'"),
    ("model.decoder_channels=[]", "'model.decoder_channels' is []"),
    ("model.decoder_channels=[16,0,8,8]", "'model.decoder_channels'"), ("model.width=0", "'model.width' is 0.0"),
    ("model.width=-0.5", "'model.width'"), ("model.inter_channels=0", "'model.inter_channels'"),
    ("model.arch=''", "'model.arch'"), ("name=a/b", "'name' is 'a/b'"),
    ("export.formats=[]", "'export.formats'"), ("export.formats=[onnx,foo]", "'export.formats'"),
    ("export.precisions=[int4]", "'export.precisions'"), ("export.calib_count=0", "'export.calib_count'"),
    ("export.parity_images=0", "'export.parity_images'"), ("export.thresholds={int8: 1.5}", "'export.thresholds'"),
    ("export.thresholds={int4: 0.9}", "'export.thresholds'"), ("export.max_gt_drop=-1", "'export.max_gt_drop'"),
]


@pytest.mark.parametrize("override,match", OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_value_is_refused_before_any_work(cli, tmp_path, override, match):
    recipe = write_recipe(tmp_path / "r.yaml")
    line = assert_refused(cli, "train", "--recipe", recipe, "--out", tmp_path / "run", "--set", override,
                          watch=[tmp_path], match=match)
    assert str(recipe) in line and "must" in line  # names the file, the key, the value and the valid range


def test_every_recipe_field_has_a_range():
    keys = {where for where, _ in recipe_fields(recipe_from_dict({}))}
    assert keys == set(RULES)


def test_requested_gpu_that_is_missing_is_refused(cli, tmp_path):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = f"cuda:{count}"  # one past the last GPU torch sees, on any machine
    with pytest.raises(RecipeError, match=f"'train.device' is '{missing}' but torch sees"):
        recipe_from_dict({}, [f"train.device={missing}"])
    if count == 0:
        assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", tmp_path / "run",
                       "--set", "train.device=cuda", watch=[tmp_path], match="torch sees no CUDA GPU")


def test_decoder_channels_of_the_wrong_length_are_refused(cli, tmp_path):
    assert_refused(cli, "train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--out", tmp_path / "run",
                   "--set", "model.decoder_channels=[8,8,8,8,8]", watch=[tmp_path],
                   match="model.decoder_channels has 5 entries; valid lengths are 1 to 4")


def test_a_recipe_named_by_its_file_says_the_input_size_it_trains(tmp_path):
    """`--set data.input_size=[64,64]` on portrait_..._256.yaml exported files named ..._256 that take 64x64."""
    recipe = ROOT / "recipes" / "portrait_unet_mnv3min_s2_256.yaml"
    assert load_recipe(recipe).name == "portrait_unet_mnv3min_s2_256"
    assert load_recipe(recipe, ["data.input_size=[64,64]"]).name == "portrait_unet_mnv3min_s2_64"
    assert load_recipe(recipe, ["data.input_size=[256,192]"]).name == "portrait_unet_mnv3min_s2_256x192"
    assert load_recipe(recipe, ["name=mine", "data.input_size=[64,64]"]).name == "mine"  # a name given is kept
    # a trailing number that is not the file's input size is left alone
    (tmp_path / "run_2.yaml").write_text("data:\n  input_size: [64, 64]\n")
    assert load_recipe(tmp_path / "run_2.yaml", ["data.input_size=[32,32]"]).name == "run_2"
