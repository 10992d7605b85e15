"""Dataset layouts, validation errors (exit 2, one line, no partial output) and augmentation."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeseg.data.datasets import discover_pairs, open_source
from edgeseg.data.transforms import SegDataset, train_transform
from edgeseg.errors import DataError

from conftest import one_line_error, write_recipe


def _folder_dataset(root: Path, n: int = 10, size: int = 64, classes=("background", "person")) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray((rng.random((size, size)) > 0.5).astype(np.uint8)).save(root / "masks" / f"im{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def _voc_dataset(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    palette = [0, 0, 0, 128, 0, 0] + [0] * (3 * 254)
    for split, ids in (("train", ["a", "b", "c"]), ("val", ["d"])):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
            m = np.zeros((48, 64), np.uint8)
            m[10:30, 10:40] = 15  # person
            m[0, :] = 255  # VOC's void border
            p = Image.fromarray(m, mode="P")
            p.putpalette(palette)
            p.save(root / "SegmentationClass" / f"{i}.png")
    return root


def test_folder_layout_splits_deterministically(tmp_path):
    root = _folder_dataset(tmp_path / "ds", n=10)
    train = discover_pairs(root, "train", val_fraction=0.2)
    val = discover_pairs(root, "val", val_fraction=0.2)
    assert len(train) == 8 and len(val) == 2
    assert not {p.id for p in train} & {p.id for p in val}


def test_voc_layout_reads_palette_masks_and_voc_classes(tmp_path):
    src = open_source(_voc_dataset(tmp_path / "voc"), "train")
    image, mask, sid = src.get(0)
    assert len(src) == 3 and src.classes[15] == "person" and len(src.classes) == 21
    assert image.shape == (48, 64, 3) and set(np.unique(mask)) == {0, 15, 255}


@pytest.mark.parametrize("problem", ["mask_value", "size_mismatch", "unreadable", "missing_pair", "empty_split", "rgb_mask"])
def test_bad_data_exits_2_with_one_line_naming_file(cli, tmp_path, problem):
    root = _folder_dataset(tmp_path / "ds")
    expect = {"mask_value": "im1.png: mask value 7", "size_mismatch": "mask size", "unreadable": "im2.png: cannot read image",
              "missing_pair": "im3.png: no mask", "empty_split": "is empty", "rgb_mask": "mode RGB"}[problem]
    if problem == "mask_value":
        Image.fromarray(np.full((64, 64), 7, np.uint8)).save(root / "masks" / "im1.png")
    elif problem == "size_mismatch":
        Image.fromarray(np.zeros((32, 64), np.uint8)).save(root / "masks" / "im0.png")
    elif problem == "unreadable":
        (root / "images" / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    elif problem == "missing_pair":
        (root / "masks" / "im3.png").unlink()
    elif problem == "empty_split":
        shutil.rmtree(root)
        (root / "train" / "images").mkdir(parents=True)
        (root / "train" / "masks").mkdir()
        (root / "classes.txt").write_text("background\nperson\n")
    elif problem == "rgb_mask":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "masks" / "im4.png")
    out = tmp_path / "run"
    res = cli("train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--data", root, "--out", out)
    assert res.exit_code == 2
    assert expect in one_line_error(res.output)
    assert not out.exists() or not any(out.iterdir())


def test_train_transform_keeps_mask_labels_and_pads_with_ignore():
    torch.manual_seed(0)
    image = np.full((64, 64, 3), 200, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1

    class One:
        classes = ("background", "person")

        def __len__(self):
            return 1

        def get(self, i):
            return image, mask, "x"

    ds = SegDataset(One(), train_transform((64, 64), hflip=True, scale=(0.5, 0.6), rotate=30, color=0.3))
    img, m = ds[0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 64, 64)
    assert set(torch.unique(m).tolist()) <= {0, 1, 255} and (m == 255).any()  # nearest + ignore padding


def test_data_synth_command_writes_layout(cli, tmp_path):
    res = cli("data", "synth", tmp_path / "s", "--task", "parts", "--count", "3", "--size", "64", "--seed", "5")
    assert res.exit_code == 0, res.output
    src = open_source(tmp_path / "s", "train", val_fraction=0.0)
    assert src.classes == ("background", "hair", "skin", "body", "clothes") and len(src) == 3
    assert (tmp_path / "s" / "slices.csv").read_text().startswith("id,skin_tone")


def test_missing_dataset_folder_is_data_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        open_source(tmp_path / "nope", "train")


def test_a_file_given_as_dataset_folder_says_it_is_a_file(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="data.zip is a file, not a dataset folder; give the folder that holds images/"):
        open_source(tmp_path / "data.zip", "train")
