"""Output modes of ``edgeseg predict`` (edgeseg.apply.compose) on small real arrays."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edgeseg.apply import compose
from edgeseg.apply.compose import (
    PALETTE,
    alpha_matte,
    blur_background,
    cutout,
    overlay,
    palette_mask,
    replace_background,
)
from edgeseg.errors import EdgesegError

H, W = 72, 96


@pytest.fixture
def scene():
    """(image, alpha, classes): textured grey background, a saturated red disc with a soft rim."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    dist = np.hypot(yy - H / 2, xx - W / 2)
    alpha = np.clip((20.0 - dist) / 4.0 + 0.5, 0.0, 1.0)  # 1 inside r=18, 0 outside r=22
    image = rng.integers(60, 200, (H, W, 3), dtype=np.uint8)  # texture
    image[..., 1] = image[..., 2] = image[..., 0]  # grey background ...
    image[alpha > 0.5] = (230, 20, 20)  # ... red subject
    classes = (alpha > 0.5).astype(np.uint8)
    classes[:, :8] = 2  # a third class along the left edge
    return image, alpha.astype(np.float32), classes


def _one_line_error(call) -> str:
    with pytest.raises(EdgesegError) as err:
        call()
    message = str(err.value)
    assert message and "\n" not in message
    return message


def test_palette_mask_round_trips_class_indices_through_png(scene, tmp_path):
    _, _, classes = scene
    classes = classes.copy()
    classes[0, :5] = [3, 7, 15, 21, 255]
    img = palette_mask(classes)
    assert img.mode == "P" and img.size == (W, H)
    path = tmp_path / "mask.png"
    img.save(path)
    back = Image.open(path)
    assert back.mode == "P"
    np.testing.assert_array_equal(np.asarray(back), classes)
    palette = np.asarray(back.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette[:22], PALETTE[:22])


def test_palette_colours_are_distinct_and_background_is_black():
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert PALETTE[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in PALETTE.tolist()}) == 256
    first = PALETTE[:21].astype(int)  # the classes a segmenter realistically has
    gaps = np.abs(first[:, None] - first[None]).sum(-1) + np.eye(21, dtype=int) * 999
    assert gaps.min() >= 64


def test_palette_mask_accepts_int64_and_rejects_bad_maps():
    ok = palette_mask(np.array([[0, 1], [2, 3]], dtype=np.int64))
    assert np.asarray(ok).tolist() == [[0, 1], [2, 3]]
    _one_line_error(lambda: palette_mask(np.zeros((4, 4), np.float32)))
    _one_line_error(lambda: palette_mask(np.zeros((4, 4, 1), np.uint8)))
    assert "0..255" in _one_line_error(lambda: palette_mask(np.full((4, 4), 256)))
    _one_line_error(lambda: palette_mask(np.full((4, 4), -1)))


def test_alpha_matte_is_rounded_alpha(scene):
    _, alpha, _ = scene
    img = alpha_matte(alpha)
    assert img.mode == "L" and img.size == (W, H)
    np.testing.assert_array_equal(np.asarray(img), np.rint(alpha * 255).astype(np.uint8))
    assert np.asarray(alpha_matte(np.array([[-0.5, 1.5]]))).tolist() == [[0, 255]]
    _one_line_error(lambda: alpha_matte(np.array([[np.nan, 0.0]])))


def test_cutout_is_rgba_with_alpha_channel(scene):
    image, alpha, _ = scene
    img = cutout(image, alpha)
    assert img.mode == "RGBA" and img.size == (W, H)
    rgba = np.asarray(img)
    np.testing.assert_array_equal(rgba[..., :3], image)
    np.testing.assert_array_equal(rgba[..., 3], np.rint(alpha * 255).astype(np.uint8))


def test_replace_background_puts_background_where_alpha_is_zero(scene):
    image, alpha, _ = scene
    background = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = np.asarray(replace_background(image, alpha, background))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[alpha == 0], background[alpha == 0])
    np.testing.assert_array_equal(out[alpha == 1], image[alpha == 1])
    rim = (alpha > 0.2) & (alpha < 0.8)
    expected = np.rint(alpha[rim, None] * image[rim] + (1 - alpha[rim, None]) * background[rim])
    assert np.abs(out[rim].astype(int) - expected).max() <= 1


def test_replace_background_covers_and_centre_crops(scene):
    image, alpha, _ = scene
    # a wide 3-stripe background: covering 96x72 keeps only (part of) the middle stripe
    background = np.zeros((30, 300, 3), dtype=np.uint8)
    background[:, :100] = (255, 0, 0)
    background[:, 100:200] = (0, 255, 0)
    background[:, 200:] = (0, 0, 255)
    out = np.asarray(replace_background(image, alpha, background))
    assert out.shape == (H, W, 3)
    assert np.all(out[alpha == 0] == (0, 255, 0))
    tall = np.asarray(replace_background(image, alpha, np.full((500, 20, 3), 40, np.uint8)))
    assert np.all(tall[alpha == 0] == 40)


def test_blur_background_keeps_subject_and_blurs_textured_background(scene):
    image, alpha, _ = scene
    out = np.asarray(blur_background(image, alpha))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[alpha == 1], image[alpha == 1])
    bg = alpha == 0
    changed = np.abs(out[bg].astype(int) - image[bg]).max(-1) > 0
    assert changed.mean() > 0.9
    assert out[bg].astype(float).std() < 0.5 * image[bg].astype(float).std()  # texture smoothed


def test_blur_background_has_no_halo(scene):
    """Background pixels next to the red subject must not turn red (masked blur)."""
    image, alpha, _ = scene
    out = np.asarray(blur_background(image, alpha, strength=2.0)).astype(float)
    yy, xx = np.mgrid[:H, :W]
    ring = (np.hypot(yy - H / 2, xx - W / 2) > 22) & (np.hypot(yy - H / 2, xx - W / 2) < 26)
    redness = out[ring, 0] - out[ring, 1:].mean(-1)  # 0 for grey, ~210 for the subject
    assert np.abs(redness).max() < 8
    # a plain blur of the same strength would bleed: check the test can see a halo at all
    naive = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(5)))
    assert (naive[ring, 0].astype(float) - naive[ring, 1:].mean(-1)).max() > 30


def test_blur_background_strength(scene):
    image, alpha, _ = scene
    np.testing.assert_array_equal(np.asarray(blur_background(image, alpha, strength=0.0)), image)
    weak = np.asarray(blur_background(image, alpha, strength=0.5)).astype(float)
    strong = np.asarray(blur_background(image, alpha, strength=3.0)).astype(float)
    bg = alpha == 0
    assert strong[bg].std() < weak[bg].std()
    _one_line_error(lambda: blur_background(image, alpha, strength=-1.0))


def test_overlay_tints_classes_and_draws_boundaries(scene):
    image, _, classes = scene
    out = np.asarray(overlay(image, classes, opacity=0.5))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    interior = np.zeros_like(classes, dtype=bool)
    interior[1:-1, 1:-1] = (
        (classes[1:-1, 1:-1] == classes[:-2, 1:-1]) & (classes[1:-1, 1:-1] == classes[2:, 1:-1])
        & (classes[1:-1, 1:-1] == classes[1:-1, :-2]) & (classes[1:-1, 1:-1] == classes[1:-1, 2:])
    )
    back = interior & (classes == 0)
    np.testing.assert_array_equal(out[back], image[back])
    for c in (1, 2):
        inside = interior & (classes == c)
        expected = np.rint(0.5 * image[inside] + 0.5 * PALETTE[c].astype(float))
        assert np.abs(out[inside].astype(int) - expected).max() <= 1
    edge = (classes[:, 1:] != classes[:, :-1])
    ys, xs = np.nonzero(edge)
    np.testing.assert_array_equal(out[ys, xs + 1], PALETTE[classes[ys, xs + 1]])
    np.testing.assert_array_equal(out[ys, xs], PALETTE[classes[ys, xs]])


@pytest.mark.parametrize(
    "call",
    [
        lambda im, a, c: cutout(im, a[:-1]),
        lambda im, a, c: cutout(im[..., :2], a),
        lambda im, a, c: cutout(im.astype(np.float32), a),
        lambda im, a, c: blur_background(im, a.T),
        lambda im, a, c: replace_background(im, a[:, :-1], im),
        lambda im, a, c: replace_background(im, a, im[..., 0]),
        lambda im, a, c: overlay(im, c[1:]),
        lambda im, a, c: overlay(im, c, opacity=1.5),
    ],
)
def test_mismatched_inputs_raise_one_line_errors(scene, call):
    image, alpha, classes = scene
    _one_line_error(lambda: call(image, alpha, classes))


# ----------------------------------------------------------------------------------------------
# row bands: every mode is computed a band at a time; the result is the whole-image one
# ----------------------------------------------------------------------------------------------


def _reference_blur(image: np.ndarray, alpha: np.ndarray, strength: float) -> np.ndarray:
    """Portrait blur from its definition on the whole image: one 2-D FFT of the mirrored image, float64."""
    h, w = alpha.shape
    sigma = strength * compose.BLUR_SIGMA_PER_DIAGONAL * np.hypot(h, w)
    a = np.clip(alpha.astype(np.float64), 0, 1)[..., None]
    wb = (1 - a) ** 2
    rgb = image.astype(np.float64)
    stack = np.concatenate([rgb * wb, wb, rgb], -1)
    pad = int(np.ceil(3 * sigma))
    hp, wp = compose._fft_size(h + 2 * pad), compose._fft_size(w + 2 * pad)
    xp = np.pad(stack, ((pad, hp - h - pad), (pad, wp - w - pad), (0, 0)), mode="symmetric")
    fy, fx = np.fft.fftfreq(hp)[:, None], np.fft.rfftfreq(wp)[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))[..., None]
    out = np.fft.irfft2(np.fft.rfft2(xp, axes=(0, 1)) * transfer, s=(hp, wp), axes=(0, 1))[pad: pad + h, pad: pad + w]
    num, den, plain = out[..., :3], np.maximum(out[..., 3:4], 0), out[..., 4:]
    background = (num + compose.MASKED_BLUR_FLOOR * plain) / (den + compose.MASKED_BLUR_FLOOR)
    return np.clip(np.rint(a * rgb + (1 - a) * background), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("band_pixels", [1, 500, 1 << 20])
def test_blur_background_matches_the_whole_image_2d_fft(scene, monkeypatch, band_pixels):
    """Separable row-then-column blur in bands = the 2-D FFT blur (off by at most 1 where it rounds at .5)."""
    image, alpha, _ = scene
    monkeypatch.setattr(compose, "BAND_PIXELS", band_pixels)
    for strength in (1.0, 2.5):
        got = np.asarray(blur_background(image, alpha, strength=strength)).astype(int)
        want = _reference_blur(image, alpha, strength).astype(int)
        assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 1e-3


@pytest.mark.parametrize("mode", ["alpha", "cutout", "replace", "overlay"])
def test_banded_modes_equal_the_whole_image(scene, monkeypatch, mode):
    image, alpha, classes = scene
    alpha = alpha * 1.2 - 0.1  # values outside [0, 1] are clipped band by band too
    background = np.random.default_rng(1).integers(0, 256, (31, 45, 3), dtype=np.uint8)
    calls = {"alpha": lambda: alpha_matte(alpha), "cutout": lambda: cutout(image, alpha),
             "replace": lambda: replace_background(image, alpha, background), "overlay": lambda: overlay(image, classes)}
    whole = np.asarray(calls[mode]())
    monkeypatch.setattr(compose, "BAND_PIXELS", 1)  # bands of 8 rows
    np.testing.assert_array_equal(np.asarray(calls[mode]()), whole)


def test_row_bands_cover_every_row_once_with_clipped_halos(monkeypatch):
    monkeypatch.setattr(compose, "BAND_PIXELS", 100)
    bands = list(compose.row_bands(45, 10, halo=3))
    assert [b[:2] for b in bands] == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 45)]
    assert bands[0][2:] == (0, 13) and bands[2][2:] == (17, 33) and bands[-1][2:] == (37, 45)
