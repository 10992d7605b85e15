"""Any one image a caller hands the Python API (``as_rgb_array``, behind ``Segmenter.predict``): every kind
of path is read like a path, a PIL image is turned upright like its file, and what Pillow cannot do with
a PIL image is a one-line DataError naming the problem and the fix."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from edgeseg.data.images import as_rgb_array
from edgeseg.errors import DataError

WIDTH, HEIGHT = 80, 60
CANNOT_READ = r"^the PIL image cannot be read \({}\); pass an open, complete image"


def _pixels(channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8)


@pytest.fixture
def exif6(tmp_path):
    """A JPEG stored landscape whose EXIF Orientation (6) says: show it turned 90 degrees clockwise."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "exif6.jpg"
    Image.fromarray(_pixels()).save(path, exif=exif)
    return path


def test_pil_image_is_turned_upright_like_its_file(exif6):
    from_path = as_rgb_array(exif6)
    with Image.open(exif6) as img:
        from_pil = as_rgb_array(img)
        assert img.size == (WIDTH, HEIGHT)  # the caller's image itself is left as it was
    assert from_path.shape == (WIDTH, HEIGHT, 3)
    np.testing.assert_array_equal(from_pil, from_path)


class _Handle:
    """An ``os.PathLike`` that is not a ``pathlib.Path`` (as storage libraries hand out)."""

    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


@pytest.mark.parametrize("as_", [str, os.fsencode])
def test_any_os_pathlike_is_read_as_a_path(exif6, as_):
    np.testing.assert_array_equal(as_rgb_array(_Handle(as_(str(exif6)))), as_rgb_array(exif6))


def test_truncated_pil_image_is_a_data_error(tmp_path):
    path = tmp_path / "trunc.jpg"
    Image.fromarray(_pixels()).save(path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with Image.open(path) as img:  # opened lazily: the pixels are decoded only when used
        with pytest.raises(DataError, match=CANNOT_READ.format(r"image file is truncated[^\n]*")):
            as_rgb_array(img)


@pytest.mark.parametrize("opened", ["in memory", "from a file"])
def test_closed_pil_image_is_a_data_error(tmp_path, opened):
    img = Image.fromarray(_pixels())
    if opened == "from a file":
        img.save(tmp_path / "a.png")
        img = Image.open(tmp_path / "a.png")
    img.close()
    with pytest.raises(DataError, match=CANNOT_READ.format("Operation on closed image")):
        as_rgb_array(img)


@pytest.mark.parametrize("straight,premultiplied", [("LA", "La"), ("RGBA", "RGBa")])
def test_premultiplied_alpha_reads_like_straight_alpha(straight, premultiplied):
    rgba = _pixels(4)
    rgba[..., 3] = np.maximum(rgba[..., 3], 128)  # premultiplying by a small alpha loses most of a colour
    img = Image.fromarray(rgba).convert(straight)
    got = as_rgb_array(img.convert(premultiplied)).astype(int)
    np.testing.assert_allclose(got, as_rgb_array(img).astype(int), atol=2)  # premultiplied values are rounded


def test_a_folder_or_a_url_is_named_for_what_it_is(tmp_path):
    """Both said 'file not found' (the URL with one slash dropped: 'http:/example.com/a.jpg')."""
    with pytest.raises(DataError, match="is a folder, not an image"):
        as_rgb_array(tmp_path)
    with pytest.raises(DataError, match="http://example.com/a.jpg: edgeseg reads local files only"):
        as_rgb_array("http://example.com/a.jpg")
