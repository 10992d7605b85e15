"""int8 export options as a new user meets them: which images ``--calib`` calibrates on, the options an export
would ignore, the messages for bad calibration input, the summary and warning lines, and reproducible files.

Real exports (the tiny checkpoint, the packaged default for refusals, which stop before any conversion).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeseg
from conftest import assert_refused, invoke_cli


def photo(path: Path, seed: int) -> np.ndarray:
    """Write a small random RGB photo at ``path``; return its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def palette_mask(path: Path, seed: int) -> None:
    """Write a VOC-style palette (mode P) label PNG at ``path``."""
    mask = Image.fromarray(np.random.default_rng(seed).integers(0, 3, (24, 32), dtype=np.uint8), mode="P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path)


def voc_folder(root: Path, count: int = 3) -> list[np.ndarray]:
    """A tiny Pascal VOC layout (JPEGImages/*.jpg, SegmentationClass/*.png palette masks, ImageSets); its photos
    as decoded from the JPEG files."""
    ids = [f"2007_{i:06d}" for i in range(count)]
    for i, name in enumerate(ids):
        photo(root / "JPEGImages" / f"{name}.jpg", i)
        palette_mask(root / "SegmentationClass" / f"{name}.png", i)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return [np.asarray(Image.open(root / "JPEGImages" / f"{name}.jpg").convert("RGB")) for name in ids]


# ---------------------------------------------------------------------------------------------
# Which images --calib calibrates on


def test_calib_on_a_dataset_layout_reads_its_photos_not_its_label_masks(tmp_path):
    """A VOC folder calibrated on its 3 photos and its 3 SegmentationClass palette masks (only folders named masks
    were skipped): a dataset layout edgeseg reads gives its images only; any other folder skips label folders."""
    from edgeseg.export.quant_images import images_in_folder

    size = (24, 32)
    photos = voc_folder(tmp_path / "voc" / "VOC2012")
    for folder in (tmp_path / "voc" / "VOC2012", tmp_path / "voc"):  # the layout itself, or a folder above it
        got = images_in_folder(folder, 32, size)
        assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, photos)), folder
    pairs = tmp_path / "pairs"  # the images/ + masks/ layout, split into train/ and val/
    for split, seed in (("train", 10), ("val", 11)):
        photo(pairs / split / "images" / "a.png", seed)
        palette_mask(pairs / split / "masks" / "a.png", seed)
    photo(pairs / "preview.png", 12)  # not part of the dataset: left out
    assert len(images_in_folder(pairs, 32, size)) == 2
    loose = tmp_path / "loose"  # no layout: every photo, no label folder
    photo(loose / "a.png", 20)
    photo(loose / "day2" / "b.jpg", 21)
    palette_mask(loose / "labels" / "a.png", 20)
    palette_mask(loose / "SegmentationClass" / "b.png", 21)
    assert len(images_in_folder(loose, 32, size)) == 2


def test_calib_from_a_voc_folder_records_and_prints_what_it_calibrated_on(tiny_checkpoint, tmp_path):
    """The summary said only 'int8 calibration: calib', the manifest kept the path as typed, and a folder with fewer
    images than --calib-count asked for said nothing."""
    voc_folder(tmp_path / "voc" / "VOC2012")
    r = invoke_cli("export", tiny_checkpoint, "--out", "e_voc", "--formats", "onnx", "--precisions", "int8",
                   "--calib", "voc/VOC2012", "--calib-count", "4", "--parity-images", "2", "--stress", "off",
                   "--threshold", "int8=0.5", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    calibration = json.loads((tmp_path / "e_voc" / "manifest.json").read_text())["model"]["calibration"]
    assert calibration["images"] == 3 and calibration["methods"] == {"onnx": "minmax"}
    assert calibration["source"] == str((tmp_path / "voc" / "VOC2012").resolve())  # absolute, as data.root
    summary = next(line for line in r.stdout.splitlines() if line.startswith("int8 calibration: "))
    assert summary.endswith("; onnx minmax; 3 images"), summary
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, r.stderr
    assert "--calib voc/VOC2012 has 3 images, fewer than --calib-count 4" in warnings[0] and "add more" in warnings[0]


def test_a_single_calibration_image_is_warned_about_in_the_python_api(tmp_path):
    from edgeseg.export.quant_images import CalibrationWarning, calibration_images

    photo(tmp_path / "one" / "a.png", 0)
    with pytest.warns(CalibrationWarning, match="has only 1 image"):
        calib = calibration_images(str(tmp_path / "one"), None, "portrait", 1, (24, 32))
    assert len(calib.images) == 1


# ---------------------------------------------------------------------------------------------
# Options that would do nothing, and bad calibration input: one line naming the problem and the fix


@pytest.mark.parametrize("args, expected", [
    (("--formats", "onnx", "--precisions", "fp32", "--calib", "{calib}"),
     "--calib {calib} would be unused: --precisions has no int8, the only calibrated precision; add int8 to "
     "--precisions, or drop --calib"),
    (("--formats", "onnx", "--precisions", "fp32", "--calib", "{empty}"),  # not 'no images': it would never be read
     "--calib {empty} would be unused: --precisions has no int8"),
    (("--formats", "onnx", "--precisions", "fp32", "--calib", "{calib}/missing"), "calibration folder not found"),
    (("--formats", "coreml", "--precisions", "int8", "--calib", "{calib}"),
     "no format in --formats (coreml) calibrates its int8 file on images; add onnx or tflite or executorch"),
    (("--formats", "onnx", "--precisions", "fp32", "--stress", "off", "--stress-threshold", "int8=0.9"),
     "--stress-threshold int8=0.9: stress parity is off"),
])
def test_options_the_export_would_ignore_are_refused(cli, tmp_path, args, expected):
    folders = {"calib": tmp_path / "calib", "empty": tmp_path / "empty"}
    photo(folders["calib"] / "a.png", 0)
    folders["empty"].mkdir()
    line = assert_refused(cli, "export", "--out", tmp_path / "out", *[a.format(**folders) for a in args],
                          watch=[tmp_path])
    assert expected.format(**folders) in line, line


def test_an_unused_calib_count_is_refused(tmp_path):
    """--calib-count in an export without int8 did nothing, first silently, then with only a warning after a full
    export, although the README says it is refused: refused like --calib, before any work (nothing written)."""
    with pytest.raises(edgeseg.EdgesegError, match="--calib-count 4 would be unused: --precisions has no int8"):
        edgeseg.export_checkpoint(None, tmp_path / "out", "onnx", "fp32,fp16", calib_count=4, stress="off",
                                  stress_thresholds={"int8": 0.9})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, args, expected", [
    ("empty", ("--calib", "{empty}"), ["--calib {empty}: no images for calibration (reads .jpg, .jpeg, .png",
                                       "put photos like the ones the model will see there"]),
    ("text files", ("--calib", "{text}"), ["--calib {text}: no images for calibration", "put photos"]),
    ("corrupt", ("--calib", "{corrupt}"), ["a.jpg: cannot read image", "re-save or remove that file"]),
    ("coreml method", ("--calib-method", "coreml=entropy"),
     ["coreml files are never calibrated on images", "drop coreml=entropy"]),
    ("format not exported", ("--calib-method", "tflite=minmax"), ["tflite is not in --formats; add tflite to --formats"]),
    ("a label folder", ("--calib", "{masks}"), ["--calib {masks} is a label folder (its images are masks)"]),
])
def test_bad_calibration_input_names_the_problem_and_the_fix(cli, tmp_path, case, args, expected):
    folders = {"empty": tmp_path / "empty", "text": tmp_path / "text", "corrupt": tmp_path / "corrupt",
               "masks": tmp_path / "data" / "masks"}  # a label folder given itself: calibrated on masks
    for folder in folders.values():
        folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folders["masks"] / "m.png")
    (folders["text"] / "notes.txt").write_text("not an image")
    (folders["corrupt"] / "a.jpg").write_bytes(b"not a jpeg")
    args = [a.format(**folders) for a in args]
    line = assert_refused(cli, "export", "--out", tmp_path / "out", "--formats", "onnx", "--precisions", "int8", *args,
                          watch=[tmp_path])
    for words in expected:
        assert words.format(**folders) in line, line


@pytest.mark.parametrize("method", [["onnx=entropy"], ("onnx=entropy",), {"onnx": "entropy"}])
def test_python_api_takes_calib_method_as_a_list_or_a_mapping(tmp_path, method):
    """A list was str()-ed: 'unknown calibration method "entropy']"'. Here the method is accepted and the export
    stops at the next check, the empty calibration folder (nothing written)."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(edgeseg.DataError, match="no images for calibration"):
        edgeseg.export_checkpoint(None, tmp_path / "out", "onnx", "int8", calib=tmp_path / "empty", calib_method=method)
    with pytest.raises(edgeseg.EdgesegError, match="tflite int8 calibration offers only minmax, not percentile"):
        edgeseg.export_checkpoint(None, tmp_path / "out", "onnx,tflite", "int8",
                                  calib_method={"onnx": "entropy", "tflite": "percentile"})
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Reproducible files


def test_tflite_label_file_carries_a_fixed_date(shared_export):
    """Two int8 TFLite files from identical inputs differed in 4 bytes: the export time zipfile stamped on the
    labels.txt MediaPipe's metadata writer packs after the model."""
    from edgeseg.export.mediapipe_metadata import LABEL_FILE_DATE

    for precision in ("fp32", "int8"):
        data = shared_export.manifest.find("tflite", precision).file.read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            assert [i.filename for i in infos] == ["labels.txt"]
            assert infos[0].date_time == LABEL_FILE_DATE and archive.read("labels.txt") == b"background\nperson"
