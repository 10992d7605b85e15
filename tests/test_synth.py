"""Tests for the synthetic portrait / person-parts generator (edgeseg.data.synth)."""
from __future__ import annotations

import ast
import os
import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeseg.data import synth
from edgeseg.errors import DataError

SIZE = 96


def _thin_hair_pixels(mask: np.ndarray) -> int:
    """Hair pixels whose left and right neighbours are both background."""
    hair = mask[:, 1:-1] == 1
    return int((hair & (mask[:, :-2] == 0) & (mask[:, 2:] == 0)).sum())


def _seeds_with(hair_type: str, n: int, size: int) -> list[int]:
    seeds = [
        s for s in range(200) if synth.render("parts", size, s).attrs["hair_type"] == hair_type
    ]
    assert len(seeds) >= n, f"fewer than {n} {hair_type!r} samples in 200 seeds"
    return seeds[:n]


def test_same_seed_gives_identical_bytes():
    a = synth.render("parts", SIZE, 7)
    b = synth.render("parts", SIZE, 7)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()
    assert a.attrs == b.attrs


def test_different_seeds_differ():
    a = synth.render("parts", SIZE, 7)
    b = synth.render("parts", SIZE, 8)
    assert a.image.tobytes() != b.image.tobytes()
    assert a.mask.tobytes() != b.mask.tobytes()


@pytest.mark.parametrize(
    "size, shape", [(64, (64, 64)), ((64, 96), (64, 96)), ((96, 64), (96, 64))]
)
def test_shapes_and_dtypes(size, shape):
    sample = synth.render("portrait", size, 3)
    assert sample.image.shape == shape + (3,) and sample.image.dtype == np.uint8
    assert sample.mask.shape == shape and sample.mask.dtype == np.uint8


@pytest.mark.parametrize("task", sorted(synth.TASKS))
def test_mask_values_within_class_range(task):
    n_classes = len(synth.TASKS[task])
    for seed in range(10):
        mask = synth.render(task, SIZE, seed).mask
        assert mask.max() < n_classes, (task, seed, np.unique(mask))


def test_portrait_is_parts_foreground_with_the_same_image():
    for seed in range(6):
        portrait = synth.render("portrait", SIZE, seed)
        parts = synth.render("parts", SIZE, seed)
        assert np.array_equal(portrait.image, parts.image)
        assert np.array_equal(portrait.mask, (parts.mask > 0).astype(np.uint8))


def test_attrs_have_valid_slice_keys_and_values():
    seen = {key: set() for key in synth.SLICE_KEYS}
    for seed in range(60):
        attrs = synth.render("portrait", 64, seed).attrs
        assert tuple(attrs) == synth.SLICE_KEYS
        for key, value in attrs.items():
            assert isinstance(value, str) and value in synth.SLICE_VALUES[key], (key, value)
            seen[key].add(value)
    for key in synth.SLICE_KEYS:  # the slices actually vary
        assert len(seen[key]) >= 3, (key, seen[key])


def test_parts_masks_contain_several_classes():
    per_sample = [set(np.unique(synth.render("parts", SIZE, s).mask)) for s in range(8)]
    assert set().union(*per_sample) == set(range(len(synth.PARTS_CLASSES)))
    assert sum(len(classes) >= 4 for classes in per_sample) >= 5, per_sample


def test_person_coverage_is_neither_empty_nor_full():
    coverage = np.array([(synth.render("portrait", 64, s).mask > 0).mean() for s in range(40)])
    assert ((coverage > 0.02) & (coverage < 0.95)).mean() >= 0.8, coverage
    assert coverage.max() < 1.0


def test_sample_without_person_has_empty_mask():
    seeds = [s for s in range(150) if synth.render("portrait", 64, s).attrs["hair_type"] == "none"]
    assert 1 <= len(seeds) <= 20  # about 1 in 20
    for seed in seeds:
        sample = synth.render("parts", 64, seed)
        assert sample.attrs["skin_tone"] == "none"
        assert not sample.mask.any()


def test_strands_leave_thin_hair_in_the_mask():
    for seed in _seeds_with("strands", 3, 128):
        assert _thin_hair_pixels(synth.render("parts", 128, seed).mask) >= 3, seed
    short = _seeds_with("short", 3, 128)
    smooth = [_thin_hair_pixels(synth.render("parts", 128, s).mask) for s in short]
    assert max(smooth) <= 2, smooth


def test_write_dataset_layout(tmp_path):
    out = tmp_path / "ds"
    assert synth.write_dataset(out, "parts", 3, (64, 80), seed=5) == out
    ids = [f"synth_{i:06d}" for i in range(3)]
    assert sorted(p.stem for p in (out / "images").iterdir()) == ids
    assert sorted(p.stem for p in (out / "masks").iterdir()) == ids
    assert (out / "classes.txt").read_text().splitlines() == list(synth.PARTS_CLASSES)
    with open(out / "slices.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "skin_tone", "lighting", "hair_type", "background"]
    for i, row in enumerate(rows[1:]):
        expected = synth.render("parts", (64, 80), synth.sample_seed(5, i))
        assert row == [ids[i]] + [expected.attrs[k] for k in synth.SLICE_KEYS]
        with Image.open(out / "images" / f"{ids[i]}.png") as im:
            assert im.mode == "RGB" and np.array_equal(np.asarray(im), expected.image)
        with Image.open(out / "masks" / f"{ids[i]}.png") as im:
            assert im.mode == "L" and np.array_equal(np.asarray(im), expected.mask)
    assert len(rows) == 4


def test_write_dataset_replaces_a_folder_it_wrote(tmp_path):
    out = tmp_path / "ds"
    synth.write_dataset(out, "parts", 3, 64, seed=1)
    synth.write_dataset(out, "portrait", 2, 64, seed=0)
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == ["synth_000000.png", "synth_000001.png"]
    assert (out / "classes.txt").read_text().splitlines() == list(synth.PORTRAIT_CLASSES)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp folder left behind
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".edgeseg-staging"))[0] == synth.SYNTH_MARKER


def test_write_dataset_into_an_empty_folder_keeps_its_mode(tmp_path):
    out = tmp_path / "ds"
    out.mkdir(mode=0o750)
    out.chmod(0o750)
    synth.write_dataset(out, "portrait", 1, 32, seed=0)
    assert (out / "images" / "synth_000000.png").is_file() and (out.stat().st_mode & 0o777) == 0o750


@pytest.mark.parametrize("copied_marker", ['{}', None])
def test_data_synth_rerun_refuses_a_users_file_added_to_its_folder(tmp_path, cli, copied_marker):
    from conftest import assert_refused

    out = tmp_path / "ds"
    assert cli("data", "synth", out, "--count", "2", "--size", "32").exit_code == 0
    (out / "images" / "my_photo.jpg").write_bytes(b"mine")
    if copied_marker is not None:
        (out / synth.SYNTH_MARKER).write_text(copied_marker)
    line = assert_refused(cli, "data", "synth", out, "--count", "2", "--size", "32", watch=[tmp_path])
    assert "not written by 'edgeseg data synth'" in line


@pytest.mark.parametrize("edited", ["classes.txt", "slices.csv", "masks/synth_000001.png"])
def test_data_synth_rerun_refuses_a_file_the_user_changed_in_its_folder(tmp_path, cli, edited):
    from conftest import assert_refused

    out = tmp_path / "ds"
    assert cli("data", "synth", out, "--count", "2", "--size", "32").exit_code == 0
    (out / edited).write_bytes((out / edited).read_bytes() + b"\n")  # same names, the user's bytes
    line = assert_refused(cli, "data", "synth", out, "--count", "3", "--size", "32", watch=[tmp_path])
    assert f"{edited} changed since 'edgeseg data synth' wrote it" in line


@pytest.mark.parametrize("user_files", [["notes.txt"], ["images/photo.jpg"], ["classes.txt"]])
def test_data_synth_refuses_a_users_folder(tmp_path, cli, user_files):
    from conftest import assert_refused

    out = tmp_path / "ds"
    for name in user_files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("mine")
    line = assert_refused(cli, "data", "synth", out, "--count", "2", "--size", "32", watch=[tmp_path])
    assert "not written by 'edgeseg data synth'" in line and user_files[0].split("/")[0] in line


def test_data_synth_refuses_a_file_or_read_only_location(tmp_path, cli, read_only_dir):
    from conftest import assert_refused

    (tmp_path / "f").write_text("x")
    assert_refused(cli, "data", "synth", tmp_path / "f" / "ds", "--count", "1", watch=[tmp_path], match="is a file")
    assert_refused(cli, "data", "synth", read_only_dir / "ds", "--count", "1", watch=[read_only_dir], match="not writable")


def test_sample_seed_formula_keeps_sets_disjoint():
    assert synth.sample_seed(0, 41) == 41
    assert synth.sample_seed(3, 2) == 3 * 1_000_003 + 2
    first = {synth.sample_seed(0, i) for i in range(1000)}
    assert first.isdisjoint(synth.sample_seed(1, i) for i in range(1000))


def test_unknown_task_raises_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="faces"):
        synth.render("faces", 64, 0)
    with pytest.raises(DataError, match="faces"):
        synth.write_dataset(tmp_path / "ds", "faces", 2, 64, 0)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("size, seed", [(4, 0), ((64,), 0), ("64", 0), (64, -1), (64, 1.5)])
def test_bad_size_or_seed_raises_data_error(size, seed):
    with pytest.raises(DataError):
        synth.render("portrait", size, seed)


def test_module_imports_only_numpy_pillow_stdlib_and_edgeseg_basics():
    tree = ast.parse(Path(synth.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module)
    allowed = {"numpy", "PIL", "edgeseg.errors", "edgeseg.fsutil", "__future__"}
    stdlib = sys.stdlib_module_names
    extra = {r for r in roots if r not in allowed and r.split(".")[0] not in stdlib}
    assert not extra, extra


def test_data_synth_killed_while_installing_leaves_a_folder_the_next_run_replaces(tmp_path, cli, monkeypatch):
    """A run killed between the renames of its install (images/ in place, masks/ and the marker not yet) left
    files no marker listed: every later run refused the folder as the user's."""
    from edgeseg import fsutil

    out = tmp_path / "ds"
    assert cli("data", "synth", out, "--count", "2", "--size", "32").exit_code == 0
    real = os.replace

    class Killed(BaseException):
        pass

    def dies_after_images(src, dst):
        real(src, dst)
        if Path(dst) == out / "images":
            raise Killed

    monkeypatch.setattr(fsutil.os, "replace", dies_after_images)
    with pytest.raises(Killed):
        synth.write_dataset(out, "portrait", 3, 32, seed=1)
    monkeypatch.setattr(fsutil.os, "replace", real)
    r = cli("data", "synth", out, "--count", "3", "--size", "32")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"synth_00000{i}.png" for i in range(3)]
