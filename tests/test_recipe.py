"""Recipes: shipped files load, unknown keys and bad values are errors, --set overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.errors import RecipeError
from edgeseg.recipe import load_recipe, recipe_from_dict

from conftest import ROOT, one_line_error, write_recipe


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    r = load_recipe(path)
    assert r.name == path.stem and r.model.arch


def test_required_recipes_exist():
    names = {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert {"portrait_unet_mnv3s_256.yaml", "parts_unet_256.yaml", "voc_lraspp_mnv3l_512.yaml"} <= names


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
