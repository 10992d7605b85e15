"""``edgeseg data convert coco|labelme``: tiny hand-made annotations rasterized by the real pycocotools and
Pillow, refusals (exit 2, one line, nothing written), and a converted folder that trains as it is."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from edgeseg.data.datasets import open_source

from conftest import assert_refused, run_edgeseg, tree_state, write_recipe

H, W = 20, 30


def _image(path: Path, seed: int = 0, size=(H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _uncompressed_rle(region: np.ndarray) -> dict:
    """COCO's uncompressed RLE (as crowd annotations use): run lengths in column-major order, 0s first."""
    flat = region.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [int(region.shape[0]), int(region.shape[1])], "counts": runs}


def _counts(mask_path: Path) -> dict[int, int]:
    values, counts = np.unique(np.asarray(Image.open(mask_path)), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


@pytest.fixture
def coco(tmp_path):
    """a.png: a person polygon (100 px), a dog RLE (40 px), a person crowd region (100 px, 20 of them under the
    dog) and an unnamed cat polygon over the person; b.jpg: only a cat; missing.png: listed, not on disk."""
    images = tmp_path / "imgs"
    _image(images / "a.png", 1)
    _image(images / "b.jpg", 2)
    dog = np.zeros((H, W), np.uint8)
    dog[15:19, 20:30] = 1  # 4 x 10 = 40 px
    dog_rle = coco_mask.encode(np.asfortranarray(dog))
    crowd = np.zeros((H, W), bool)
    crowd[:, 25:30] = True  # 100 px; rows 15-18 of it (20 px) are covered by the dog
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.jpg", "height": H, "width": W},
                   {"id": 3, "file_name": "missing.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
            {"id": 11, "image_id": 1, "category_id": 18, "iscrowd": 0,
             "segmentation": {"size": dog_rle["size"], "counts": dog_rle["counts"].decode("ascii")}},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": _uncompressed_rle(crowd)},
            {"id": 13, "image_id": 1, "category_id": 17, "iscrowd": 0, "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]]},
            {"id": 14, "image_id": 2, "category_id": 17, "iscrowd": 0, "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]]},
        ],
    }
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(doc))
    return ann, images


def test_coco_polygon_rle_crowd_unnamed_and_missing_image(cli, coco, tmp_path):
    ann, images = coco
    before = tree_state(images, ann)
    out = tmp_path / "out"
    r = cli("data", "convert", "coco", ann, "--images", images, "--out", out, "--classes", "person,dog")
    assert r.exit_code == 0, r.output
    assert f"warning: {images / 'missing.png'} is missing; skipped" in r.stderr
    assert "wrote 2 images and masks" in r.stdout and "person in 1, dog in 1; ignore (255) in 1" in r.stdout
    assert (out / "classes.txt").read_text() == "background\nperson\ndog\n"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.jpg"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png"]
    # person polygon 100 px (the unnamed cat over it is background, not drawn), dog 40 px, crowd 100 - 20 under the dog
    assert _counts(out / "masks" / "a.png") == {0: H * W - 100 - 40 - 80, 1: 100, 2: 40, 255: 80}
    a = np.asarray(Image.open(out / "masks" / "a.png"))
    assert (a[2:12, 2:12] == 1).all() and (a[15:19, 25:30] == 2).all() and (a[0:15, 25:30] == 255).all()
    assert _counts(out / "masks" / "b.png") == {0: H * W}
    for name in ("a.png", "b.jpg"):  # copied byte for byte, sources untouched
        assert (out / "images" / name).read_bytes() == (images / name).read_bytes()
    assert tree_state(images, ann) == before
    assert not list(tmp_path.glob(".edgeseg-staging-*"))
    src = open_source(out, "train", val_fraction=0.5)
    image, mask, sid = src.get(0)
    assert src.classes == ("background", "person", "dog") and image.shape == (H, W, 3) and mask.shape == (H, W)


def test_coco_unknown_class_exit_2_lists_categories(cli, coco, tmp_path):
    ann, images = coco
    line = assert_refused(cli, "data", "convert", "coco", ann, "--images", images, "--out", tmp_path / "out",
                          "--classes", "person,horse", watch=(tmp_path,))
    assert "'horse' is not a category" in line and "categories present: cat, dog, person" in line


def test_an_out_folder_inside_the_image_folder_is_refused(cli, coco, tmp_path):
    """data convert coco --out imgs/conv was allowed: its images and masks then sat among the photos it read
    (predict refuses the same)."""
    ann, images = coco
    line = assert_refused(cli, "data", "convert", "coco", ann, "--images", images, "--out", images / "conv",
                          "--classes", "person", watch=(tmp_path,))
    assert f"is inside {images}, the folder being converted" in line


@pytest.mark.parametrize("kind", ["coco", "labelme"])
def test_existing_non_empty_out_is_refused_and_untouched(cli, coco, tmp_path, kind):
    ann, images = coco
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    args = ("coco", ann, "--images", images) if kind == "coco" else ("labelme", _labelme(tmp_path / "lm"))
    line = assert_refused(cli, "data", "convert", *args, "--out", out, "--classes", "person", watch=(tmp_path,))
    assert "is not empty (notes.txt)" in line


@pytest.mark.parametrize("problem", ["json", "rle_counts", "rle_size", "no_images"])
def test_bad_coco_input_exits_2_and_writes_nothing(cli, coco, tmp_path, problem):
    ann, images = coco
    doc = json.loads(ann.read_text())
    expect = {"json": "not valid JSON", "rle_counts": "compressed RLE counts are malformed", "rle_size": "RLE size",
              "no_images": "check --images"}[problem]
    if problem == "json":
        ann.write_text(ann.read_text()[:-5])
    elif problem == "rle_counts":
        doc["annotations"][1]["segmentation"]["counts"] = "zzz"
    elif problem == "rle_size":
        doc["annotations"][1]["segmentation"]["size"] = [W, H]
    elif problem == "no_images":
        images = tmp_path / "empty"
        images.mkdir()
    if problem != "json":
        ann.write_text(json.dumps(doc))
    assert_refused(cli, "data", "convert", "coco", ann, "--images", images, "--out", tmp_path / "out",
                   "--classes", "person,dog", watch=(tmp_path,), match=expect)


def _labelme(folder: Path) -> Path:
    """a.json (+ a.jpg): person polygon 10x10, dog rectangle 10x4, a later dog rectangle 5x5 over the person's
    corner, an unnamed tree and a dog line (no area); b.json names an image that is not there."""
    _image(folder / "a.jpg", 3)
    shapes = [
        {"label": "person", "points": [[2, 2], [11, 2], [11, 11], [2, 11]], "shape_type": "polygon"},
        {"label": "dog", "points": [[29, 18], [20, 15]], "shape_type": "rectangle"},
        {"label": "tree", "points": [[0, 0], [29, 0], [29, 19]], "shape_type": "polygon"},
        {"label": "dog", "points": [[8, 8], [12, 12]], "shape_type": "rectangle"},
        {"label": "dog", "points": [[0, 19], [29, 19]], "shape_type": "line"},
    ]
    doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": "a.jpg", "imageData": None,
           "imageHeight": H, "imageWidth": W}
    (folder / "a.json").write_text(json.dumps(doc))
    (folder / "b.json").write_text(json.dumps({**doc, "imagePath": "b.jpg"}))
    return folder


def test_labelme_polygon_and_rectangle_later_shape_wins(cli, tmp_path):
    folder = _labelme(tmp_path / "lm")
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    r = cli("data", "convert", "labelme", folder, "--out", out, "--classes", "person,dog")
    assert r.exit_code == 0, r.output
    assert f"warning: {folder / 'b.jpg'} is missing; skipped" in r.stderr
    assert "warning: 1 shape of named classes not polygon/rectangle/circle (line: 1): not drawn" in r.stderr
    assert "wrote 1 image and mask to" in r.stdout
    assert (out / "classes.txt").read_text() == "background\nperson\ndog\n"
    assert (out / "images" / "a.jpg").read_bytes() == (folder / "a.jpg").read_bytes()
    # outlines included, as LabelMe draws: person 10x10 less the 4x4 the later dog rectangle (5x5) covers
    assert _counts(out / "masks" / "a.png") == {0: H * W - 84 - 65, 1: 100 - 16, 2: 40 + 25}
    assert open_source(out, "train", val_fraction=0.5).classes == ("background", "person", "dog")


def test_labelme_files_in_sub_folders_are_not_read_and_the_summary_says_so(cli, tmp_path):
    """They were dropped without a word."""
    folder = _labelme(tmp_path / "lm")
    (folder / "trip").mkdir()
    (folder / "trip" / "c.json").write_text((folder / "a.json").read_text())
    r = cli("data", "convert", "labelme", folder, "--out", tmp_path / "out", "--classes", "person,dog")
    assert r.exit_code == 0, r.output
    assert (f"warning: 1 .json file in sub-folders of {folder}: not read (only the folder's own files are; "
            "convert each sub-folder on its own)") in r.stderr


def test_labelme_unknown_class_exit_2_lists_labels(cli, tmp_path):
    folder = _labelme(tmp_path / "lm")
    line = assert_refused(cli, "data", "convert", "labelme", folder, "--out", tmp_path / "out", "--classes", "cat",
                          watch=(tmp_path,))
    assert "labelled 'cat'" in line and "labels present: dog, person, tree" in line


def test_converted_coco_folder_trains(cli, tmp_path):
    """Ten 64x64 images: edgeseg's default split (every 10th image is val) works on the folder as it is."""
    images = tmp_path / "imgs"
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}
    for i in range(10):
        _image(images / f"im{i}.png", i, (64, 64))
        doc["images"].append({"id": i, "file_name": f"im{i}.png", "height": 64, "width": 64})
        x = 4 + 3 * i
        doc["annotations"].append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                                   "segmentation": [[x, 8, x + 24, 8, x + 24, 56, x, 56]]})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    data = tmp_path / "data"
    r = cli("data", "convert", "coco", ann, "--images", images, "--out", data, "--classes", "person")
    assert r.exit_code == 0, r.output
    assert "9 train, 1 val" in r.stdout
    recipe = write_recipe(tmp_path / "r.yaml", {"data": {"root": str(data), "classes": ["background", "person"],
                                                         "input_size": [64, 64]},
                                                "train": {"steps_per_epoch": 2}})
    r = run_edgeseg("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (tmp_path / "run" / "best.pt").is_file()


def test_labelme_shapes_of_labels_not_in_classes_are_reported(cli, tmp_path):
    """They were drawn as background without a word (a label with a stray space among them)."""
    folder = _labelme(tmp_path / "lm")
    doc = json.loads((folder / "a.json").read_text())
    doc["shapes"].append({**doc["shapes"][0], "label": "person "})
    (folder / "a.json").write_text(json.dumps(doc))
    r = cli("data", "convert", "labelme", folder, "--out", tmp_path / "out", "--classes", "person,dog")
    assert r.exit_code == 0, r.output
    assert ('warning: 2 shapes with labels not in --classes ("person " x1, "tree" x1): not drawn (their pixels keep '
            'the class of a named shape there, else background; name a label in --classes to draw it)' in r.stderr)
