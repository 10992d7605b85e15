"""edgeseg eval: metrics JSON, exported files, fairness slices (built-in and from a CSV)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_refused, invoke_cli, one_line_error


def test_eval_default_model_on_builtin_set(cli, tmp_path):
    res = cli("eval", "--count", "6", "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert {"miou", "per_class_iou", "pixel_accuracy", "boundary_iou", "images"} <= set(doc)
    assert doc["images"] == 6 and set(doc["per_class_iou"]) == {"background", "person"}
    assert 0.5 < doc["per_class_iou"]["person"] <= 1.0  # the packaged model has learned something
    # synthetic samples carry slice attributes, so slices work out of the box
    assert {"skin_tone", "lighting", "hair_type", "background"} <= set(doc["slices"])
    for rep in doc["slices"].values():
        assert rep["worst"] in rep["iou"] and rep["gap"] >= 0


def test_eval_folder_dataset_with_slices_csv(cli, tiny_checkpoint, tmp_path):
    assert cli("data", "synth", tmp_path / "ds", "--count", "10", "--size", "64").exit_code == 0
    slices = tmp_path / "slices.csv"
    rows = ["id,region"] + [f"synth_{i:06d},{'north' if i % 2 else 'south'}" for i in range(10)]
    slices.write_text("\n".join(rows) + "\n")
    res = cli("eval", tiny_checkpoint, "--data", tmp_path / "ds", "--split", "val", "--slices", slices,
              "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["images"] == 1  # every 10th image is validation
    assert list(doc["slices"]) == ["region"]


def test_eval_exported_file(cli, tiny_checkpoint, shared_export, tmp_path):
    a = cli("eval", shared_export.dir / "tiny-fp32.onnx", "--count", "4", "--json", tmp_path / "a.json")
    b = cli("eval", tiny_checkpoint, "--count", "4", "--json", tmp_path / "b.json")
    assert a.exit_code == b.exit_code == 0
    ja, jb = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert ja["format"] == "onnx" and abs(ja["miou"] - jb["miou"]) < 1e-3


def test_bad_slices_file_exits_2(cli, tmp_path):
    bad = tmp_path / "s.csv"
    bad.write_text("name\nx\n")
    res = cli("eval", "--count", "2", "--slices", bad)
    assert res.exit_code == 2 and "needs a header with 'id'" in one_line_error(res.output)


# ---------------------------------------------------------------------------------------------
# Bad input: refused before any image is predicted, nothing written


@pytest.fixture(scope="module")
def flat_dataset(tmp_path_factory) -> Path:
    """A folder-pairs dataset without split folders (its splits: train and val, derived)."""
    root = tmp_path_factory.mktemp("flat") / "ds"
    assert invoke_cli("data", "synth", root, "--count", "4", "--size", "64").exit_code == 0
    return root


def test_unknown_split_is_refused_listing_the_splits(cli, tiny_checkpoint, flat_dataset, tmp_path):
    # before: every image (training images included) was evaluated
    assert_refused(cli, "eval", tiny_checkpoint, "--data", flat_dataset, "--split", "test", "--json", tmp_path / "e.json",
                   watch=[tmp_path, flat_dataset], match="no split 'test'")
    assert "choose one of: train, val" in assert_refused(cli, "eval", tiny_checkpoint, "--data", flat_dataset,
                                                         "--split", "all", watch=[flat_dataset])


def test_unknown_split_of_split_folders_and_voc(cli, tiny_checkpoint, flat_dataset, tmp_path):
    for split in ("training", "val"):
        shutil.copytree(flat_dataset, tmp_path / "ds" / split)
    voc = tmp_path / "voc"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\n")
    line = assert_refused(cli, "eval", tiny_checkpoint, "--data", tmp_path / "ds", "--split", "train", watch=[tmp_path],
                          match="no split 'train' (no ")
    assert line.endswith("choose one of: training, val")
    line = assert_refused(cli, "eval", tiny_checkpoint, "--data", voc, "--split", "val", watch=[tmp_path], match="no split 'val'")
    assert line.endswith("choose one of: train")


def test_split_without_data_is_refused(cli, tmp_path):
    assert_refused(cli, "eval", "--split", "train", "--count", "2", "--json", tmp_path / "e.json", watch=[tmp_path],
                   match="pass --data DIR")


@pytest.mark.parametrize("content,match", [
    (bytes(range(256)) * 4, "not a CSV text file (byte 128 is not UTF-8 text)"),
    (b"id,region\nsynth_000000\x00,north\n", "not a CSV text file (it contains NUL bytes)"),
    (b"id,region\nsynth_000000,north,extra\n", "line 2 has more values than the header's 2"),
    (b"id,region\nsynth_000000\n", "line 2 has fewer values than the header's 2"),
], ids=["binary", "nul", "long-line", "short-line"])
def test_bad_slices_file_is_one_line(cli, tmp_path, content, match):
    bad = tmp_path / "slices.csv"
    bad.write_bytes(content)
    line = assert_refused(cli, "eval", "--count", "2", "--slices", bad, "--json", tmp_path / "e.json", watch=[tmp_path],
                          match=match)
    assert line.startswith(f"error: {bad}")


def test_slices_csv_from_a_spreadsheet_with_a_byte_order_mark(cli, tmp_path):
    slices = tmp_path / "slices.csv"
    slices.write_bytes("\ufeffid,region\nsynth_000000,north\n".encode())
    res = cli("eval", "--count", "2", "--slices", slices, "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["slices"]["region"]["images"] == {"north": 1}


def test_json_path_under_a_file_is_refused_before_evaluating(cli, tmp_path):
    (tmp_path / "f").write_text("x")
    assert_refused(cli, "eval", "--count", "2", "--json", tmp_path / "f" / "e.json", watch=[tmp_path], match="--json")


def test_json_output_never_replaces_a_file_edgeseg_did_not_write(tiny_checkpoint, tmp_path, cli):
    from conftest import assert_refused

    mine = tmp_path / "mine.pt"
    mine.write_bytes(tiny_checkpoint.read_bytes())
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    for target in (mine, notes):
        assert_refused(cli, "eval", mine, "--count", "2", "--json", target, watch=[tmp_path],
                       match="is not a JSON report edgeseg wrote")
    out = tmp_path / "eval.json"
    assert cli("eval", mine, "--count", "2", "--json", out).exit_code == 0
    assert cli("eval", mine, "--count", "2", "--json", out).exit_code == 0  # its own report is replaced
    assert json.loads(out.read_text())["written_by"].startswith("edgeseg")


def test_a_slice_without_any_person_has_no_person_iou_and_is_not_the_worst():
    """The synthetic 'none' hair type / skin tone (no person in the picture) reported person IoU 0.0 when a few
    pixels were predicted as person, and so was the worst slice with a gap of 0.98."""
    from edgeseg.evaluation.slices import slice_report

    masks = np.zeros((3, 8, 8), np.uint8)
    masks[:2, 2:6, 2:6] = 1  # two images with a person, one without
    preds = masks.copy()
    preds[0, 2, 2] = 0  # one missed pixel: IoU 31/32 on the 'a' slice
    preds[2, 0, 0] = 1  # a false positive on the image without a person
    report = slice_report(preds, masks, ["p0", "p1", "n0"], {"p0": {"hair": "a"}, "p1": {"hair": "b"}, "n0": {"hair": "none"}},
                          ("background", "person"))["hair"]
    assert report["iou"] == {"a": 15 / 16, "b": 1.0, "none": None} and report["images"]["none"] == 1
    assert report["worst"] == "a" and report["gap"] == round(1 - 15 / 16, 6)


def test_eval_of_an_export_directory_takes_artifact_like_predict(cli, shared_export, tmp_path):
    """eval had no --artifact (an export folder always ran its fp32 ONNX), and a bare precision was refused."""
    for pick, expected in (("int8", ("onnx", "int8")), ("tflite:int8", ("tflite", "int8")), (None, ("onnx", "fp32"))):
        out = tmp_path / f"{pick}.json"
        r = cli("eval", shared_export.dir, "--count", "2", "--json", out, *(("--artifact", pick) if pick else ()))
        assert r.exit_code == 0, r.output
        doc = json.loads(out.read_text())
        assert (doc["format"], doc["precision"]) == expected
