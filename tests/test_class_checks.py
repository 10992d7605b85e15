"""A dataset's labels must mean what the model's outputs mean: its class list is checked against the
model's by eval, export and train; --slices ids must name its images; export --data takes still images."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import assert_refused, invoke_cli

# the packaged default's architecture, fine-tuned for one step at 64x64 (its weights fit any input size)
FINE_TUNE = {
    "name": "ft",
    "model": {"arch": "unet_mobilenet_v3_small_minimal", "width": 1.0, "decoder_channels": [48, 32, 24, 16]},
    "data": {"input_size": [64, 64], "mean": [114.0] * 3, "std": [58.0] * 3},
    "train": {"epochs": 1, "batch_size": 2, "steps_per_epoch": 1, "device": "cpu", "amp": False},
}


@pytest.fixture(scope="module")
def portrait_data(tmp_path_factory) -> Path:
    """A tiny synthetic portrait dataset (classes.txt: background, person)."""
    root = tmp_path_factory.mktemp("classes") / "ds"
    assert invoke_cli("data", "synth", root, "--count", "10", "--size", "64").exit_code == 0
    return root


def relabelled(data: Path, dest: Path, classes: list[str]) -> Path:
    """A copy of ``data`` whose classes.txt lists ``classes``."""
    shutil.copytree(data, dest)
    (dest / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return dest


OTHER_CLASSES = [["person", "background"], ["background", "cat"]]


@pytest.mark.parametrize("classes", OTHER_CLASSES, ids=["reversed", "renamed"])
def test_eval_refuses_data_labelled_with_other_classes(cli, portrait_data, tmp_path, classes):
    data = relabelled(portrait_data, tmp_path / "inv", classes)
    line = assert_refused(cli, "eval", "default", "--data", data, "--json", tmp_path / "e.json", watch=[tmp_path])
    assert f"[{', '.join(classes)}]" in line and "[background, person]" in line and "relabel" in line


@pytest.mark.parametrize("classes", OTHER_CLASSES, ids=["reversed", "renamed"])
def test_export_refuses_data_labelled_with_other_classes_before_converting(cli, portrait_data, tmp_path, classes):
    data = relabelled(portrait_data, tmp_path / "inv", classes)
    line = assert_refused(cli, "export", "default", "--data", data, "--out", tmp_path / "out", "--formats", "onnx",
                          "--precisions", "fp32", watch=[tmp_path])
    assert f"[{', '.join(classes)}]" in line and "[background, person]" in line and "fine-tune" in line


def test_export_says_a_clip_dataset_is_for_eval(cli, tmp_path):
    clips = tmp_path / "clips"
    assert cli("data", "synth", clips, "--clips", "1", "--frames", "2", "--size", "32").exit_code == 0
    line = assert_refused(cli, "export", "default", "--data", clips, "--out", tmp_path / "out", "--formats", "onnx",
                          "--precisions", "fp32", watch=[tmp_path])
    assert "clip dataset" in line and "images/ and masks/" in line and f"edgeseg eval MODEL --data {clips}" in line


def _slices(path: Path, ids: list[str]) -> Path:
    path.write_text("id,region\n" + "".join(f"{i},north\n" for i in ids))
    return path


def test_slices_matching_no_image_are_refused(cli, portrait_data, tmp_path):
    csv = _slices(tmp_path / "sl2.csv", [f"synth_{i:06d}.png" for i in range(10)])
    line = assert_refused(cli, "eval", "default", "--data", portrait_data, "--slices", csv, watch=[tmp_path])
    assert "no id in the CSV matches" in line and "'synth_000000.png'" in line and "'synth_000009'" in line
    assert "without its extension" in line


def test_slices_matching_some_images_warn_with_the_count(cli, portrait_data, tmp_path):
    csv = _slices(tmp_path / "sl.csv", ["synth_000000"])
    res = cli("eval", "default", "--data", portrait_data, "--split", "train", "--slices", csv)
    assert res.exit_code == 0, res.output
    assert "warning: --slices: 8 of 9 images have no row in the CSV" in res.stderr


def _train(cli, recipe: Path, data: Path, out: Path, *args):
    return cli("train", "--recipe", recipe, "--data", data, "--out", out, *args)


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(FINE_TUNE))
    return path


def test_resume_refuses_data_whose_classes_were_reordered(cli, recipe, portrait_data, tmp_path):
    run = tmp_path / "run"
    assert _train(cli, recipe, portrait_data, run).exit_code == 0
    data = relabelled(portrait_data, tmp_path / "inv", ["person", "background"])
    line = assert_refused(cli, "train", "--recipe", recipe, "--data", data, "--out", run, "--resume",
                          "--set", "train.epochs=2", watch=[run])
    assert "[background, person]" in line and "[person, background]" in line and "--resume" in line


def test_fine_tuning_the_packaged_default_by_name(cli, recipe, portrait_data, tmp_path):
    res = _train(cli, recipe, portrait_data, tmp_path / "run", "--weights", "default")
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr


def test_fine_tuning_onto_other_class_names_of_the_same_count_warns(cli, recipe, portrait_data, tmp_path):
    data = relabelled(portrait_data, tmp_path / "cats", ["background", "cat"])
    res = _train(cli, recipe, data, tmp_path / "run", "--weights", "default")
    assert res.exit_code == 0, res.output
    assert "warning: --weights default: its outputs were the classes [background, person]" in res.stderr
    assert "[background, cat]" in res.stderr
