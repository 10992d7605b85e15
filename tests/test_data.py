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
              "missing_pair": "im3.png: no mask", "empty_split": "split 'train' has no images", "rgb_mask": "mode RGB"}[problem]
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


def _refused(root: Path, split: str = "train", **kw) -> str:
    """The DataError message of opening ``split`` of ``root``, checked to be one line."""
    with pytest.raises(DataError) as err:
        open_source(root, split, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def _binary_0_255(root: Path, n: int = 6) -> Path:
    """A folder dataset whose masks were saved as 0/255 images (white person), the common mistake."""
    root = _folder_dataset(root, n=n)
    for i in range(n):
        m = np.zeros((64, 64), np.uint8)
        m[10:50, 20:44] = 255
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    return root


def test_0_255_masks_stop_training_naming_a_mask_and_the_fix(cli, tmp_path):
    """They trained on 'ignore' alone and reported a perfect val mIoU 1.0 with person n/a."""
    root = _binary_0_255(tmp_path / "ds")
    out = tmp_path / "run"
    res = cli("train", "--recipe", write_recipe(tmp_path / "r.yaml"), "--data", root, "--out", out)
    assert res.exit_code == 2
    line = one_line_error(res.output)
    assert f"{root / 'masks'}/im" in line and "holds only 0 and 255" in line
    assert "save person as 1, e.g. mask // 255" in line
    assert not out.exists() or not any(out.iterdir())


def test_0_and_255_masks_with_thin_void_outlines_or_beside_class_ids_are_accepted(tmp_path):
    """VOC-style void outlines (255 on a thin band), and a solid ignore area (a COCO crowd) in a dataset with classes."""
    root = _folder_dataset(tmp_path / "ds", n=6)
    for i in range(6):
        m = np.zeros((64, 64), np.uint8)
        m[10:50, 20:44] = 255
        m[13:47, 23:41] = 0  # a 3-pixel outline of a box, nothing inside
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    assert len(open_source(root, "train", val_fraction=0.0)) == 6
    shutil.rmtree(root)
    root = _binary_0_255(tmp_path / "ds", n=6)
    Image.fromarray(np.ones((64, 64), np.uint8)).save(root / "masks" / "im3.png")
    assert len(open_source(root, "train", val_fraction=0.0)) == 6


def test_a_jpeg_mask_is_refused_even_under_a_png_name(tmp_path):
    root = _folder_dataset(tmp_path / "ds")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / "im1.png", format="JPEG")
    with pytest.raises(DataError) as err:
        open_source(root, "train").validate()
    msg = str(err.value)
    assert msg.startswith(f"{root / 'masks' / 'im1.png'}: mask is stored as JPEG") and "save masks as PNG" in msg


def test_two_images_with_one_name_are_refused_naming_both(tmp_path):
    root = _folder_dataset(tmp_path / "ds")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "images" / "im0.jpg")
    msg = _refused(root)
    assert str(root / "images" / "im0.jpg") in msg and str(root / "images" / "im0.png") in msg
    assert "rename or remove one" in msg


def test_pairs_in_sub_folders_are_read_with_mirrored_paths(tmp_path):
    root = _folder_dataset(tmp_path / "ds", n=4)
    for d in ("images", "masks"):
        (root / d / "trip").mkdir()
        shutil.move(root / d / "im3.png", root / d / "trip" / "im3.png")
    src = open_source(root, "train", val_fraction=0.0)
    assert [p.id for p in src.pairs] == ["im0", "im1", "im2", "trip/im3"]
    assert src.get(3)[1].shape == (64, 64)
    (root / "masks" / "trip" / "im3.png").unlink()
    assert f"no mask {root / 'masks' / 'trip' / 'im3.png'}" in _refused(root)


def test_mask_suffix_case_is_ignored_and_a_non_png_mask_is_named(tmp_path):
    root = _folder_dataset(tmp_path / "ds", n=4)
    (root / "masks" / "im2.png").rename(root / "masks" / "im2.PNG")
    assert len(open_source(root, "train", val_fraction=0.0)) == 4
    Image.open(root / "masks" / "im2.PNG").save(root / "masks" / "im2.jpg")
    (root / "masks" / "im2.PNG").unlink()
    assert f"(found {root / 'masks' / 'im2.jpg'}: masks must be PNG" in _refused(root)


def test_classes_txt_with_a_bom_or_a_duplicate(tmp_path):
    root = _folder_dataset(tmp_path / "ds", n=4)
    (root / "classes.txt").write_text("background\nperson\n", encoding="utf-8-sig")
    assert open_source(root, "train").classes == ("background", "person")
    (root / "classes.txt").write_text("background\nperson\nperson\n")
    assert _refused(root).startswith(f"{root / 'classes.txt'}: class 'person' is listed twice")


def test_an_empty_val_images_folder_says_so_without_val_fraction_advice(tmp_path):
    root = tmp_path / "ds"
    _folder_dataset(root / "train", n=2)
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir()
    shutil.move(root / "train" / "classes.txt", root / "classes.txt")
    msg = _refused(root, "val")
    assert msg.startswith(f"{root / 'val' / 'images'}: split 'val' has no images") and "val_fraction" not in msg
