"""Fixes from a new user's trial, on real files: a folder named like predict's ledger (refused, --force or not),
colour profiles (ICC) kept by the outputs that show the photo, 1-bit masks, the error for a mask drawn on an
EXIF-rotated photo's stored pixels, the LabelMe warning for shapes of unnamed labels, and GIFs in a folder."""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from edgeseg.apply.predict import LEDGER_NAME
from edgeseg.data.datasets import discover_pairs, open_source
from edgeseg.data.images import load_mask
from edgeseg.errors import DataError

from conftest import assert_refused, invoke_cli, one_line_error


def _photo(path: Path, size=(40, 32), seed: int = 0, **save) -> Path:
    """A small noisy RGB photo (height, width = ``size``); ``save``: Pillow's save options (exif, icc_profile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save)
    return path


def _wide_gamut_profile() -> bytes:
    """An ICC v2 RGB display profile with Display P3's primaries (D50-adapted) and gamma 2.2: a profile that is
    not sRGB, built here because no ICC file ships with the test machine."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)
    text = b"edgeseg test P3\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, int(2.2 * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
            (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)), (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text\0\0\0\0none\0")]
    start = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + xyz(0.9642, 1.0, 0.8249)[8:])
    return header + b"\0" * (128 - len(header)) + table + data


# ----------------------------------------------------------------------------------------------
# 1. a folder where predict keeps its ledger
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_named_like_the_ledger_is_refused_before_any_work_even_with_force(cli, tmp_path, force):
    """It said 'pass --force to replace it'; with --force the model ran and the ledger write crashed
    (IsADirectoryError, exit 1, traceback)."""
    photo = _photo(tmp_path / "photos" / "a.jpg")
    out = tmp_path / "ledg3"
    (out / LEDGER_NAME).mkdir(parents=True)
    (out / LEDGER_NAME / "precious.txt").write_text("precious")
    line = assert_refused(cli, "predict", "default", photo, "--out", out, *(["--force"] if force else []),
                          watch=[out, photo.parent], match=f"{out / LEDGER_NAME} is a folder; edgeseg never replaces a "
                                                         "folder: move it away or choose another --out")
    assert "--force" not in line


# ----------------------------------------------------------------------------------------------
# 2. colour profiles
# ----------------------------------------------------------------------------------------------


def test_outputs_that_show_the_photo_keep_its_colour_profile_and_its_pixels(cli, tmp_path):
    """A Display P3 photo's cut-out, blur, replace and overlay were written without its profile (colours shifted
    in every colour-managed viewer). Two inputs with the same pixels, one with the profile: the outputs' pixels
    are the same, only the profile differs; masks and mattes carry none. The replace background (sRGB) is
    converted into the photo's profile, so it looks as it did."""
    profile = _wide_gamut_profile()
    photos = tmp_path / "photos"
    tagged = _photo(photos / "p3.jpg", quality=95, icc_profile=profile)
    plain = _photo(photos / "plain.jpg", quality=95)
    assert np.array_equal(np.asarray(Image.open(tagged)), np.asarray(Image.open(plain)))
    green = (20, 200, 40)
    background = tmp_path / "bg.png"
    Image.new("RGB", (16, 16), green).save(background)
    written = {}
    for mode in ("mask", "alpha", "cutout", "blur", "replace", "overlay"):
        extra = ["--background", background] if mode == "replace" else []
        res = cli("predict", "default", photos, "--out", tmp_path / mode, "--output", mode, *extra)
        assert res.exit_code == 0, res.output
        written[mode] = {name: Image.open(tmp_path / mode / f"{name}.png") for name in ("p3", "plain")}
        assert "icc_profile" not in written[mode]["plain"].info
        want = profile if mode in ("cutout", "blur", "replace", "overlay") else None
        assert written[mode]["p3"].info.get("icc_profile") == want, mode
        if mode != "replace":
            assert np.array_equal(np.asarray(written[mode]["p3"]), np.asarray(written[mode]["plain"])), mode
    # where the matte is 0, replace shows the background alone: as given for the sRGB photo, in P3 for the other
    behind = np.asarray(written["cutout"]["plain"])[..., 3] == 0
    assert behind.sum() > 100  # the default model finds no person in noise
    to_p3 = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                    "RGB", "RGB")
    in_p3 = np.asarray(ImageCms.applyTransform(Image.new("RGB", (1, 1), green), to_p3))[0, 0]
    assert np.abs(in_p3.astype(int) - green).max() > 10  # the conversion is not a no-op
    # (matte 0 in the cut-out: alpha < 1/510, so the photo may move a composite pixel by one level)
    assert np.abs(np.asarray(written["replace"]["plain"])[behind].astype(int) - green).max() <= 1
    assert np.abs(np.asarray(written["replace"]["p3"])[behind].astype(int) - in_p3).max() <= 1


# ----------------------------------------------------------------------------------------------
# 3. 1-bit masks, and refusals that say how to fix the mask
# ----------------------------------------------------------------------------------------------


def _dataset(root: Path, masks: dict[str, np.ndarray], have_images=()) -> Path:
    """``root/val/{images,masks}`` + classes.txt (background, person): a photo per mask, but for ``have_images``."""
    for name, mask in masks.items():
        if name not in have_images:
            _photo(root / "val" / "images" / f"{name}.png", size=mask.shape, seed=len(name))
        (root / "val" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "val" / "masks" / f"{name}.png")
    (root / "classes.txt").write_text("background\nperson\n")
    return root


def test_one_bit_masks_are_read_as_class_ids_0_and_1(cli, tmp_path):
    """Masks saved with Image.fromarray(mask.astype(bool)) were refused ('mask has mode 1')."""
    person = np.zeros((40, 32), bool)
    person[8:30, 6:20] = True
    root = _dataset(tmp_path / "ds", {"a": person, "b": ~person})
    assert Image.open(root / "val" / "masks" / "a.png").mode == "1"
    assert np.array_equal(load_mask(root / "val" / "masks" / "a.png", 2), person.astype(np.uint8))  # 1, not 255
    res = cli("eval", "default", "--data", root, "--json", tmp_path / "eval.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "eval.json").read_text())["images"] == 2


@pytest.mark.parametrize("kind, problem, fix", [
    ("rgb", "mask has mode RGB", "save it as an 8-bit L or P PNG"),
    ("deep", "mask values up to 300", "save it as an 8-bit L or P PNG"),
    ("range", "mask value 7 is outside the class range 0..1", "relabel it, or list every class"),
])
def test_mask_refusals_say_how_to_fix_the_mask(tmp_path, kind, problem, fix):
    path = tmp_path / "m.png"
    if kind == "rgb":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    elif kind == "deep":
        Image.fromarray(np.full((8, 8), 300, np.uint16)).save(path)
    else:
        Image.fromarray(np.full((8, 8), 7, np.uint8)).save(path)
    with pytest.raises(DataError) as err:
        load_mask(path, 2)
    assert problem in str(err.value) and fix in str(err.value), err.value


# ----------------------------------------------------------------------------------------------
# 4. a mask drawn on an EXIF-rotated photo's stored pixels
# ----------------------------------------------------------------------------------------------


def test_a_mask_in_the_stored_orientation_of_an_exif_rotated_photo_is_named_as_such(cli, tmp_path):
    """It said 'mask size 160x120 != image size 120x160', which looks wrong to a user whose viewer shows 160x120."""
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    root = tmp_path / "ds"
    _photo(root / "val" / "images" / "img02.jpg", size=(120, 160), exif=exif.tobytes())  # stored 160x120
    _dataset(root, {"img02": np.zeros((120, 160), np.uint8)}, have_images=("img02",))
    res = cli("eval", "default", "--data", root)
    assert res.exit_code == 2
    line = one_line_error(res.output)
    assert ("mask size 160x120 != image size 120x160: img02.jpg is EXIF-rotated (stored 160x120, shown 120x160); "
            "masks must follow the shown orientation: rotate the mask, or save the photo upright") in line, line
    # a mask of the shown size is fine; a mask of another size altogether is not blamed on EXIF
    for mask, fine in ((np.zeros((160, 120), np.uint8), True), (np.zeros((100, 100), np.uint8), False)):
        Image.fromarray(mask).save(root / "val" / "masks" / "img02.png")
        source = open_source(root, "val")
        if fine:
            source.validate()
            continue
        with pytest.raises(DataError) as err:
            source.validate()
        assert "mask size 100x100 != image size 120x160 (img02.jpg)" in str(err.value)
        assert "EXIF" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# 5. LabelMe shapes of labels not in --classes
# ----------------------------------------------------------------------------------------------


def test_labelme_warning_says_shapes_of_unnamed_labels_are_not_drawn(cli, tmp_path):
    """It said 'drawn as background', but they are not drawn: the person under the dog stays person."""
    folder = tmp_path / "lm2"
    _photo(folder / "a.jpg", size=(20, 30))
    shapes = [{"label": "person", "points": [[2, 2], [11, 2], [11, 11], [2, 11]], "shape_type": "polygon"},
              {"label": "dog", "points": [[6, 6], [20, 15]], "shape_type": "rectangle"}]  # later, over the person
    (folder / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "a.jpg", "imageHeight": 20,
                                               "imageWidth": 30}))
    out = tmp_path / "out"
    res = cli("data", "convert", "labelme", folder, "--out", out, "--classes", "person")
    assert res.exit_code == 0, res.output
    assert 'warning: 1 shape with labels not in --classes ("dog" x1): not drawn (their pixels keep the class of a ' \
           "named shape there, else background" in res.stderr
    assert "drawn as background" not in res.stderr
    mask = np.asarray(Image.open(out / "masks" / "a.png"))
    assert (mask[2:12, 2:12] == 1).all() and (mask[12:16, 12:21] == 0).all()


# ----------------------------------------------------------------------------------------------
# 6. GIF in a folder, as a single file
# ----------------------------------------------------------------------------------------------


def test_a_folder_scan_reads_gif_like_a_single_gif_path(cli, tmp_path):
    """A folder's .gif files were skipped while a .gif given by name was read."""
    photos = tmp_path / "photos"
    _photo(photos / "b.png")
    Image.open(photos / "b.png").convert("P").save(photos / "a.gif")
    res = cli("predict", "default", photos, "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "o" / "a.png").size == (32, 40) and (tmp_path / "o" / "b.png").is_file()
    res = cli("predict", "default", photos / "a.gif", "--out", tmp_path / "one")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "one" / "a.png").read_bytes() == (tmp_path / "o" / "a.png").read_bytes()
    # datasets read the same list of kinds
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (photos / "a.gif").replace(tmp_path / "ds" / "images" / "x.gif")
    (tmp_path / "ds" / "masks").mkdir()
    Image.fromarray(np.zeros((40, 32), np.uint8)).save(tmp_path / "ds" / "masks" / "x.png")
    assert [p.image.name for p in discover_pairs(tmp_path / "ds", "train", val_fraction=0)] == ["x.gif"]


def test_the_apis_render_carries_the_profile_as_predict_writes_it(tmp_path):
    """``Segmenter.render`` dropped the photo's profile (and composited an sRGB background unconverted), so its
    picture differed from what `edgeseg predict --output` writes for the same photo."""
    import edgeseg

    profile = _wide_gamut_profile()
    tagged = _photo(tmp_path / "p3.jpg", quality=95, icc_profile=profile)
    background = tmp_path / "bg.png"
    Image.new("RGB", (16, 16), (20, 200, 40)).save(background)
    with edgeseg.load("default") as seg:
        for source in (tagged, Image.open(tagged)):  # a path and a PIL image carry it; an array has none
            for mode in ("blur", "replace", "mask"):
                picture = seg.render(source, mode, background=background if mode == "replace" else None)
                assert picture.info.get("icc_profile") == (None if mode == "mask" else profile), mode
        cli_like = seg.render(tagged, "replace", background=background)
        assert "icc_profile" not in seg.render(np.asarray(Image.open(tagged)), "blur").info
    res = invoke_cli("predict", "default", tagged, "--out", tmp_path / "out", "--output", "replace",
                     "--background", background)
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "p3.png")), np.asarray(cli_like))
