"""Guided filter and matte refinement (edgeseg.apply.refine) on small real arrays."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeseg.apply import compose
from edgeseg.apply.refine import guided_filter, refine_alpha
from edgeseg.errors import EdgesegError
from edgeseg.metrics import band_width, boundary_band

# ----------------------------------------------------------------------------------------------
# brute-force reference: loops over windows, one small least-squares solve each
# ----------------------------------------------------------------------------------------------


def _window(h: int, w: int, y: int, x: int, r: int):
    return slice(max(0, y - r), min(h, y + r + 1)), slice(max(0, x - r), min(w, x + r + 1))


def _reference_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float, weights=None):
    """Guided filter written from its definition (He et al. 2013, eqs. 5-8, 14-15; weighted LS)."""
    g = guide.astype(np.float64) / (255.0 if guide.dtype == np.uint8 else 1.0)
    g = g[..., None] if g.ndim == 2 else g
    h, w, c = g.shape
    wts = np.ones((h, w)) if weights is None else weights
    coef = np.zeros((h, w, c + 1))
    window_weight = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            ys, xs = _window(h, w, y, x, r)
            gi, pi, wi = g[ys, xs].reshape(-1, c), src[ys, xs].reshape(-1), wts[ys, xs].reshape(-1)
            mu = wi @ gi / wi.sum()
            pm = wi @ pi / wi.sum()
            d = gi - mu
            cov = (d * wi[:, None]).T @ d / wi.sum()
            cross = (d * wi[:, None]).T @ (pi - pm) / wi.sum()
            a = np.linalg.solve(cov + eps * np.eye(c), cross)
            coef[y, x] = np.append(a, pm - a @ mu)
            window_weight[y, x] = wi.mean()
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            ys, xs = _window(h, w, y, x, r)
            k, kw = coef[ys, xs].reshape(-1, c + 1), window_weight[ys, xs].reshape(-1)
            mean = kw @ k / kw.sum()
            out[y, x] = mean[:c] @ g[y, x] + mean[c]
    return out


@pytest.fixture
def tiny():
    rng = np.random.default_rng(1)
    guide = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    guide[:, 6:] //= 3  # a colour edge
    src = rng.random((9, 11))
    return guide, src


@pytest.fixture(params=["whole", "banded"])
def bands(request, monkeypatch):
    """Run each test on the whole image and again in bands of 8 rows (the smallest), so band edges and halos are hit."""
    if request.param == "banded":
        monkeypatch.setattr(compose, "BAND_PIXELS", 1)
    return request.param


@pytest.mark.parametrize("colour", [True, False])
def test_guided_filter_matches_brute_force(tiny, colour, bands):
    guide, src = tiny
    g = guide if colour else guide[..., 1]
    for r, eps in ((1, 1e-3), (2, 1e-2), (6, 1e-4)):  # r = 6 exceeds the image: all windows clipped
        got = guided_filter(g, src, r, eps)
        assert got.dtype == np.float32 and got.shape == src.shape
        np.testing.assert_allclose(got, _reference_filter(g, src, r, eps), atol=2e-5)


def test_weighted_guided_filter_matches_brute_force(tiny, bands):
    guide, src = tiny
    weights = np.random.default_rng(2).random(src.shape) + 0.01
    got = guided_filter(guide, src, 2, 1e-3, weights=weights)
    np.testing.assert_allclose(got, _reference_filter(guide, src, 2, 1e-3, weights), atol=2e-5)
    # equal weights are the plain filter
    np.testing.assert_allclose(guided_filter(guide, src, 2, 1e-3, weights=np.full(src.shape, 0.3)),
                               guided_filter(guide, src, 2, 1e-3), atol=1e-5)


@pytest.mark.parametrize("channels", [3, 0])
def test_guided_filter_constant_src_is_returned(channels):
    rng = np.random.default_rng(3)
    shape = (40, 56, channels) if channels else (40, 56)
    guide = rng.random(shape)
    src = np.full((40, 56), 0.37, dtype=np.float32)
    for subsample in (1, 2):
        out = guided_filter(guide, src, 4, 1e-9, subsample=subsample)
        np.testing.assert_allclose(out, src, atol=1e-5)


def test_guided_filter_with_src_equal_to_guide_and_small_eps_keeps_edges():
    """eps -> 0 and src = guide: every window is fitted exactly, so the output is the input."""
    rng = np.random.default_rng(4)
    gray = (rng.random((32, 48)) > 0.5).astype(np.float64) * 0.8 + 0.1
    np.testing.assert_allclose(guided_filter(gray, gray, 3, 1e-10), gray, atol=1e-4)


def test_fast_guided_filter_is_close_to_the_full_one(bands):
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:96, :128]
    guide = np.dstack([np.sin(xx / 9.0), np.cos(yy / 7.0), np.sin((xx + yy) / 11.0)]) * 0.4 + 0.5
    src = (guide[..., 0] > 0.5).astype(np.float64) * 0.8 + rng.normal(0, 0.05, (96, 128))
    full = guided_filter(guide, src, 4, 1e-3)
    fast = guided_filter(guide, src, 4, 1e-3, subsample=2)
    assert np.abs(full - fast).mean() < 0.03


def test_guided_filter_rejects_bad_arguments(tiny):
    guide, src = tiny
    for call in (
        lambda: guided_filter(guide, src[:-1], 2, 1e-3),
        lambda: guided_filter(guide[..., :2], src, 2, 1e-3),
        lambda: guided_filter(guide, src, 0, 1e-3),
        lambda: guided_filter(guide, src, 2, 0.0),
        lambda: guided_filter(guide, src, 2, 1e-3, subsample=0),
        lambda: guided_filter(guide, src, 2, 1e-3, weights=np.zeros_like(src)),
    ):
        with pytest.raises(EdgesegError) as err:
            call()
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# refine_alpha on a synthetic portrait: a disc with 1-px hair strands on a textured background
# ----------------------------------------------------------------------------------------------

SIZE = 160


def _draw_line(mask: np.ndarray, p0, p1) -> None:
    n = 2 * int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    ys = np.rint(np.linspace(p0[0], p1[0], n)).astype(int)
    xs = np.rint(np.linspace(p0[1], p1[1], n)).astype(int)
    keep = (ys >= 0) & (ys < mask.shape[0]) & (xs >= 0) & (xs < mask.shape[1])
    mask[ys[keep], xs[keep]] = True


def _portrait(seed: int = 0, strands: int = 14):
    """(image uint8, ground-truth mask, disc mask): dark subject, 1-px strands, light textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx, rad = SIZE * 0.55, SIZE * 0.5, SIZE * 0.25
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2
    truth = disc.copy()
    for k in range(strands):
        theta = -np.pi * (0.1 + 0.8 * k / (strands - 1))
        length = rad * (0.5 + 0.4 * rng.random())
        tip = theta + 0.15 * rng.standard_normal()
        _draw_line(truth, (cy + 0.9 * rad * np.sin(theta), cx + 0.9 * rad * np.cos(theta)),
                   (cy + (rad + length) * np.sin(tip), cx + (rad + length) * np.cos(tip)))
    coarse = rng.standard_normal((SIZE // 8, SIZE // 8, 3)).astype(np.float32)
    blobs = np.dstack([np.asarray(Image.fromarray(coarse[..., c], "F").resize((SIZE, SIZE), Image.BICUBIC))
                       for c in range(3)])
    background = np.array([170.0, 190.0, 205.0]) + 28 * blobs + 20 * rng.standard_normal((SIZE, SIZE, 3))
    subject = np.array([70.0, 45.0, 35.0]) + 8 * rng.standard_normal((SIZE, SIZE, 3))
    image = np.clip(np.where(truth[..., None], subject, background), 0, 255).astype(np.uint8)
    return image, truth, disc


def _low_res_prediction(mask: np.ndarray, factor: int = 4) -> np.ndarray:
    """What a model at 1/factor resolution gives after bilinear upsampling: area-downsample, upsample."""
    h, w = mask.shape
    small = Image.fromarray(mask.astype(np.float32), "F").resize((w // factor, h // factor), Image.BOX)
    return np.clip(np.asarray(small.resize((w, h), Image.BILINEAR)), 0.0, 1.0)


def _scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, Boundary IoU) of the foreground; band = 2% of the diagonal (Cheng et al. 2021)."""
    iou = np.count_nonzero(pred & truth) / np.count_nonzero(pred | truth)
    width = band_width(*truth.shape)
    gb, pb = boundary_band(truth, width), boundary_band(pred, width)
    return iou, np.count_nonzero(gb & pb) / np.count_nonzero(gb | pb)


@pytest.mark.parametrize("subsample", [None, 2])
def test_refine_alpha_recovers_hair_strands_and_boundary(subsample):
    image, truth, disc = _portrait()
    blurred = _low_res_prediction(truth)
    refined = refine_alpha(image, blurred, subsample=subsample)
    assert refined.dtype == np.float32 and refined.shape == truth.shape
    assert refined.min() >= 0.0 and refined.max() <= 1.0

    iou0, biou0 = _scores(blurred > 0.5, truth)
    iou1, biou1 = _scores(refined > 0.5, truth)
    assert biou1 >= biou0 + 0.15, (biou0, biou1)  # measured: 0.72 -> 0.99
    assert iou1 >= iou0 + 0.05, (iou0, iou1)  # measured: 0.91 -> 1.00 (0.998)
    strands = truth & ~disc
    assert np.mean(blurred[strands] > 0.5) < 0.1  # the blur deleted the strands ...
    assert np.mean(refined[strands] > 0.5) > 0.9  # ... refinement brings them back
    assert np.count_nonzero((refined > 0.5) & ~truth) <= 5  # without inventing new ones


def test_refine_alpha_keeps_confident_regions():
    image, truth, _ = _portrait(seed=1)
    blurred = _low_res_prediction(truth)
    refined = refine_alpha(image, blurred)
    sure = (blurred == 1.0) | (blurred == 0.0)
    change = np.abs(refined - blurred)[sure]
    assert change.max() < 0.1  # measured 0.06: only the guided filter's smoothing next to the band
    assert change.mean() < 0.005


def test_refine_alpha_without_colour_evidence_invents_nothing():
    """On a flat image the colours say nothing: the matte is only smoothed, the strands stay lost."""
    _, truth, disc = _portrait(seed=2)
    blurred = _low_res_prediction(truth)
    flat = np.full(truth.shape + (3,), 128, dtype=np.uint8)
    refined = refine_alpha(flat, blurred)
    before, after = blurred > 0.5, refined > 0.5
    assert np.count_nonzero(before & after) / np.count_nonzero(before | after) > 0.95
    assert np.mean(after[truth & ~disc]) < 0.1


def test_refine_alpha_rejects_bad_inputs():
    image, truth, _ = _portrait()
    alpha = truth.astype(np.float32)
    nan_alpha = alpha.copy()
    nan_alpha[3, 3] = np.nan
    for call in (
        lambda: refine_alpha(image, alpha[:-1]),
        lambda: refine_alpha(image.astype(np.float32), alpha),
        lambda: refine_alpha(image[..., 0], alpha),
        lambda: refine_alpha(image, nan_alpha),
        lambda: refine_alpha(image, alpha, radius=0),
    ):
        with pytest.raises(EdgesegError) as err:
            call()
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# row bands: the memory-lean path gives the whole-image result
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subsample", [1, 2, None])
def test_refine_alpha_in_bands_equals_the_whole_image(monkeypatch, subsample):
    """Bands of 8 rows (many band edges, halos wider than the band) change nothing beyond float32 rounding."""
    image, truth, _ = _portrait(seed=3)
    blurred = _low_res_prediction(truth)
    whole = refine_alpha(image, blurred, subsample=subsample)
    monkeypatch.setattr(compose, "BAND_PIXELS", 1)
    banded = refine_alpha(image, blurred, subsample=subsample)
    np.testing.assert_allclose(banded, whole, atol=1e-6)


def test_fast_guided_filter_in_bands_equals_the_whole_image(monkeypatch):
    rng = np.random.default_rng(6)
    guide = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    src, weights = rng.random((61, 83)), rng.random((61, 83)) + 0.01
    whole = guided_filter(guide, src, 6, 1e-3, weights=weights, subsample=3)
    monkeypatch.setattr(compose, "BAND_PIXELS", 1)
    np.testing.assert_allclose(guided_filter(guide, src, 6, 1e-3, weights=weights, subsample=3), whole, atol=1e-6)
