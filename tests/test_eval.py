"""edgeseg eval: metrics JSON, exported files, fairness slices (built-in and from a CSV)."""
from __future__ import annotations

import json

from conftest import one_line_error, run_edgeseg


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
    assert run_edgeseg("data", "synth", tmp_path / "ds", "--count", "10", "--size", "64").returncode == 0
    slices = tmp_path / "slices.csv"
    rows = ["id,region"] + [f"synth_{i:06d},{'north' if i % 2 else 'south'}" for i in range(10)]
    slices.write_text("\n".join(rows) + "\n")
    res = cli("eval", tiny_checkpoint, "--data", tmp_path / "ds", "--split", "val", "--slices", slices,
              "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["images"] == 1  # every 10th image is validation
    assert list(doc["slices"]) == ["region"]


def test_eval_exported_file(cli, tiny_checkpoint, tmp_path):
    assert cli("export", tiny_checkpoint, "--out", tmp_path / "x", "--formats", "onnx", "--precisions", "fp32",
               "--parity-images", "2").exit_code == 0
    a = cli("eval", tmp_path / "x" / "tiny-fp32.onnx", "--count", "4", "--json", tmp_path / "a.json")
    b = cli("eval", tiny_checkpoint, "--count", "4", "--json", tmp_path / "b.json")
    assert a.exit_code == b.exit_code == 0
    ja, jb = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert ja["format"] == "onnx" and abs(ja["miou"] - jb["miou"]) < 1e-3


def test_bad_slices_file_exits_2(cli, tmp_path):
    bad = tmp_path / "s.csv"
    bad.write_text("name\nx\n")
    res = cli("eval", "--count", "2", "--slices", bad)
    assert res.exit_code == 2 and "needs a header with 'id'" in one_line_error(res.output)
