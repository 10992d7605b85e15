"""edgeseg predict on real files: every output mode, odd sizes, EXIF, RGBA/gray/16-bit, corrupt inputs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeseg.data import synth

from conftest import one_line_error


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    s = synth.render("portrait", (90, 70), 3)  # odd size, not the model's
    Image.fromarray(s.image).save(d / "odd.png")
    Image.fromarray(s.image).convert("L").save(d / "gray.png")
    Image.fromarray(s.image).convert("RGBA").save(d / "rgba.png")
    Image.fromarray((s.image[..., 0].astype(np.uint16) * 257)).save(d / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.fromarray(s.image).save(d / "exif.jpg", exif=exif.tobytes())
    return d


@pytest.mark.parametrize("mode", ["mask", "alpha", "cutout", "blur", "replace", "overlay"])
def test_each_output_mode_writes_full_size_png(cli, tiny_checkpoint, photos, tmp_path, mode):
    bg = tmp_path / "bg.png"
    Image.fromarray(np.full((40, 50, 3), (0, 255, 0), np.uint8)).save(bg)
    args = ["predict", tiny_checkpoint, photos / "odd.png", "--out", tmp_path / "o", "--output", mode]
    if mode == "replace":
        args += ["--background", bg]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "o" / "odd.png")
    assert out.size == (70, 90)
    assert out.mode == {"mask": "P", "alpha": "L", "cutout": "RGBA", "blur": "RGB", "replace": "RGB", "overlay": "RGB"}[mode]
    if mode == "mask":
        assert set(np.unique(np.asarray(out))) <= {0, 1}


def test_input_kinds_and_exif(cli, tiny_checkpoint, photos, tmp_path):
    res = cli("predict", tiny_checkpoint, photos, "--out", tmp_path / "o", "--output", "alpha")
    assert res.exit_code == 0, res.output
    for name in ("odd", "gray", "rgba", "deep16"):
        assert Image.open(tmp_path / "o" / f"{name}.png").size == (70, 90)
    assert Image.open(tmp_path / "o" / "exif.png").size == (90, 70)  # EXIF orientation applied


def test_corrupt_image_is_reported_and_the_rest_processed(cli, tiny_checkpoint, photos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.open(photos / "odd.png").save(folder / "good.png")
    res = cli("predict", tiny_checkpoint, folder, "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert "skipped" in res.output and "broken.jpg" in res.output and "1 of 2 inputs" in res.output
    assert (tmp_path / "o" / "good.png").is_file() and not (tmp_path / "o" / "broken.png").exists()


def test_predict_with_exported_file_matches_checkpoint(cli, tiny_checkpoint, photos, tmp_path):
    exp = tmp_path / "exp"
    assert cli("export", tiny_checkpoint, "--out", exp, "--formats", "onnx", "--precisions", "fp32",
               "--parity-images", "2").exit_code == 0
    assert cli("predict", exp / "tiny-fp32.onnx", photos / "odd.png", "--out", tmp_path / "a").exit_code == 0
    assert cli("predict", tiny_checkpoint, photos / "odd.png", "--out", tmp_path / "b").exit_code == 0
    a = np.asarray(Image.open(tmp_path / "a" / "odd.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "odd.png"))
    assert (a == b).mean() > 0.999


def test_replace_without_background_exits_2(cli, tiny_checkpoint, photos, tmp_path):
    res = cli("predict", tiny_checkpoint, photos / "odd.png", "--out", tmp_path / "o", "--output", "replace")
    assert res.exit_code == 2 and "--background" in one_line_error(res.output)
