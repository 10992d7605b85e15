"""The packaged try-on parts model: opened by name wherever 'default' is (eval, predict, the Python API)."""
from __future__ import annotations

import json

import numpy as np

import edgeseg
from edgeseg.data.synth import PARTS_CLASSES, render
from edgeseg.models.checkpoint import PACKAGED, load_checkpoint


def test_the_packaged_parts_checkpoint_records_how_it_was_made_and_scores_above_the_bar():
    ckpt = load_checkpoint(PACKAGED["parts"])
    assert ckpt.info.classes == PARTS_CLASSES
    assert PACKAGED["parts"].stat().st_size < 1_500_000  # fp16 weights: the repository stays small
    m = ckpt.metrics
    assert "make train-parts" in m["train_command"] and "parts eval set" in m["eval_set"]
    assert m["miou"] >= 0.80 and m["images"] == 200


def test_load_parts_predicts_the_five_parts_at_the_images_size():
    sample = render("parts", (96, 80), 5)
    with edgeseg.load("parts") as seg:
        assert seg.classes == PARTS_CLASSES
        mask = seg.predict(sample.image)
    assert mask.shape == (96, 80) and mask.dtype == np.uint8 and set(np.unique(mask)) <= set(range(5))
    assert (mask == sample.mask).mean() > 0.7  # it segments, not just a shape


def test_eval_parts_uses_the_builtin_parts_set(cli, tmp_path):
    r = cli("eval", "parts", "--count", "8", "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["data"] == "built-in synthetic parts eval set" and set(doc["per_class_iou"]) == set(PARTS_CLASSES)
    assert doc["miou"] > 0.7


def test_predict_parts_writes_an_overlay(cli, tmp_path):
    from PIL import Image

    Image.fromarray(render("parts", 64, 2).image).save(tmp_path / "a.png")
    r = cli("predict", "parts", tmp_path / "a.png", "--out", tmp_path / "out", "--output", "overlay")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out" / "a.png").size == (64, 64)
