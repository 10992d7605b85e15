"""Edge refinement of soft foreground mattes with the guided filter (layer 1: numpy + Pillow only).

A segmenter runs at low resolution (256-512 px), so its foreground probability, upsampled to the
photo, is a blurred version of the true matte: a 1-px hair strand becomes a faint smear that a
0.5 threshold deletes, and the subject's outline sits wherever bilinear interpolation put it.
The guided filter (He, Sun and Tang, "Guided Image Filtering", TPAMI 2013) aligns it with the photo by
explaining the matte, window by window, as a linear function of the full-resolution colours:
``q = a . I + b``. Colour edges and thin structures of the photo then reappear in the matte.

``guided_filter`` is the filter itself: box means from integral images (O(1) per pixel for any
radius, fully vectorised), the colour-guide version with the full 3x3 covariance, a grayscale
version, optional per-pixel confidence weights, and the "fast guided filter" subsampling (He and
Sun 2015) that fits the linear coefficients at a lower resolution and applies them at full
resolution.

``refine_alpha`` is the recipe for mattes. A plain guided filter only redistributes the blurred
matte (a strand faded to 0.25 stays near 0.25), so it first re-estimates alpha in the uncertain
band by solving the compositing equation ``I = alpha F + (1 - alpha) B`` with local foreground
and background colours taken from confidently labelled pixels, then regularises that estimate
with a confidence-weighted guided filter.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from edgeseg.apply.compose import row_bands
from edgeseg.errors import EdgesegError

#: Confidence exponent of ``refine_alpha``: weight = |2 alpha - 1| ** CONFIDENCE_POWER, so alpha
#: 0.95 weighs 0.43, alpha 0.9 weighs 0.17 and alpha 0.75 weighs 0.004.
CONFIDENCE_POWER = 8
#: Weight floor: windows with no confident pixel fall back to the plain guided filter.
WEIGHT_FLOOR = 1e-3
#: Foreground/background colours are sampled within SAMPLE_RADIUS_FACTOR x radius, doubling the
#: window SAMPLE_SCALES - 1 times where no confident pixel is in reach.
SAMPLE_RADIUS_FACTOR = 4
SAMPLE_SCALES = 3
#: Minimum mean confidence of a sampling window for its colour mean to count.
SAMPLE_FLOOR = 1e-3
#: Squared F-B colour distance (colours in [0, 1]) at which the colour estimate gets half trust.
COLOUR_SEPARATION = 0.01
#: ``subsample=None`` shrinks the fit until the window radius there is about this many pixels
#: (the fast guided filter loses little at that size; He and Sun 2015 use r = 8, s = 4).
FAST_FIT_RADIUS = 4


# ----------------------------------------------------------------------------------------------
# box means
# ----------------------------------------------------------------------------------------------


def _box_sum_axis(x: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Sum over a window of radius ``r`` along ``axis`` (clipped at the borders), float64.

    With ``c`` the running sum, pixel i gets ``c[min(i + r, n - 1)] - c[i - r - 1]`` (0 when
    i - r - 1 < 0); done with slices in place, no index arrays.
    """
    c = np.moveaxis(np.cumsum(x, axis=axis, dtype=np.float64), axis, 0)
    n = c.shape[0]
    r = min(r, n - 1)
    out = np.empty_like(c)
    out[: n - r] = c[r:]
    out[n - r:] = c[n - 1]
    out[r + 1:] -= c[: n - r - 1]
    return np.moveaxis(out, 0, axis)


def _window_counts(h: int, w: int, r: int) -> np.ndarray:
    """Number of pixels in each clipped (2r+1)^2 window, shape HxW."""
    def count(n: int) -> np.ndarray:
        idx = np.arange(n)
        return np.minimum(idx + r + 1, n) - np.maximum(idx - r, 0)

    return np.outer(count(h), count(w)).astype(np.float64)


def box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """Mean of ``x`` (HxW or HxWxC) over the (2r+1)^2 window at each pixel, clipped at borders.

    Separable integral images: two cumulative sums and four lookups per pixel whatever ``r``.
    """
    s = _box_sum_axis(_box_sum_axis(x, r, 0), r, 1)
    n = _window_counts(x.shape[0], x.shape[1], r)
    return s / (n if x.ndim == 2 else n[..., None])


# ----------------------------------------------------------------------------------------------
# working in row bands: fits at full or reduced resolution, a band of rows at a time
# ----------------------------------------------------------------------------------------------
#
# Every full-resolution step is either per pixel or a window mean, so it runs on a band of rows
# (``row_bands``) widened by the windows' reach: float64 temporaries then cost a few MB per band
# instead of tens of bytes per pixel of the photo, and the result is the same as on the whole.

RowSource = Callable[[int, int], tuple]  # (y0, y1) -> arrays for rows [y0, y1)


def _to_float(rows: np.ndarray) -> np.ndarray:
    """Rows as float64; uint8 is scaled to [0, 1] (times 1/255), floats are kept."""
    return rows.astype(np.float64) * (1.0 / 255.0) if rows.dtype == np.uint8 else rows.astype(np.float64)


def _as_guide(rows: np.ndarray) -> np.ndarray:
    """Guide rows as float64 HxWxC (C = 1 or 3); uint8 is scaled to [0, 1], floats are kept."""
    g = _to_float(np.asarray(rows))
    return g[..., None] if g.ndim == 2 else g


def _check_guide(guide: np.ndarray) -> np.ndarray:
    g = np.asarray(guide)
    if not (g.ndim == 2 or (g.ndim == 3 and g.shape[2] in (1, 3))):
        raise EdgesegError(f"guide must be HxW or HxWx3, got shape {g.shape}")
    return g


def _map_rows(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``fn`` (per pixel, on float64 rows) applied to HxW ``x`` band by band; float32 result."""
    out = np.empty(x.shape, np.float32)
    for y0, y1, _, _ in row_bands(*x.shape[:2]):
        out[y0:y1] = fn(x[y0:y1].astype(np.float64))
    return out


def _windowed(fit: Callable[..., tuple], halo: int, inputs: tuple) -> RowSource:
    """Rows of ``fit(*inputs)`` computed on demand from the input rows widened by ``halo``.

    ``fit`` takes rows of each input (``None`` passes through) and returns a tuple of arrays for
    those rows; each output row must depend only on input rows within ``halo`` of it (window
    means clipped at the image border), so the rows returned equal those of a fit on the whole.
    """
    h = inputs[0].shape[0]

    def rows(y0: int, y1: int) -> tuple:
        lo, hi = max(0, y0 - halo), min(h, y1 + halo)
        outs = fit(*(None if x is None else x[lo:hi] for x in inputs))
        return tuple(o[y0 - lo: y1 - lo] for o in outs)
    return rows


def _collect(rows: RowSource, h: int, w: int) -> tuple:
    """All rows of a row source, band by band, as whole float32 arrays (what Pillow resizes anyway)."""
    outs = None
    for y0, y1, _, _ in row_bands(h, w):
        band = rows(y0, y1)
        if outs is None:
            outs = tuple(np.empty((h,) + o.shape[1:], np.float32) for o in band)
        for out, o in zip(outs, band):
            out[y0:y1] = o
    return outs


def _channels(x: np.ndarray) -> list[np.ndarray]:
    return [x] if x.ndim == 2 else [x[..., i] for i in range(x.shape[2])]


def _shrink(x: np.ndarray, lh: int, lw: int) -> np.ndarray:
    """Bilinear (antialiased) resize of full-resolution HxW or HxWxC ``x`` to lh x lw, as float32.

    uint8 is read as [0, 1]. One float32 channel (what Pillow resizes) exists at a time, filled
    band by band.
    """
    h, w = x.shape[:2]
    buf = np.empty((h, w), np.float32)
    small = []
    for chan in _channels(x):
        for y0, y1, _, _ in row_bands(h, w):
            buf[y0:y1] = _to_float(chan[y0:y1])
        small.append(np.asarray(Image.fromarray(buf, "F").resize((lw, lh), Image.BILINEAR)))
    return small[0] if x.ndim == 2 else np.stack(small, -1)


def _upsampled(arrays: tuple, h: int, w: int) -> RowSource:
    """Rows of each low-resolution array (lh x lw [x C]) resized bilinearly to h x w, as float64.

    Pillow's ``box`` picks the source rows of each band, so a band equals the same rows of the
    whole resize (within float32 rounding).
    """
    images = [[Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), "F") for c in _channels(x)] for x in arrays]
    flat = [x.ndim == 2 for x in arrays]  # the closure keeps Pillow's copies only, not the arrays

    def rows(y0: int, y1: int) -> tuple:
        out = []
        for chans, is_flat in zip(images, flat):
            lw, lh = chans[0].size
            box = (0, y0 * lh / h, lw, y1 * lh / h)
            up = [np.asarray(im.resize((w, y1 - y0), Image.BILINEAR, box=box), dtype=np.float64) for im in chans]
            out.append(up[0] if is_flat else np.stack(up, -1))
        return tuple(out)
    return rows


def _fit_rows(make_fit: Callable[[int], tuple], radius: int, inputs: tuple, subsample: int) -> RowSource:
    """Rows, at full resolution, of a windowed fit over ``inputs`` (full-resolution arrays or None).

    ``make_fit(radius)`` returns ``(fit, halo)`` for ``_windowed``. With ``subsample`` 1 the fit
    runs on demand at full resolution. Otherwise (the fast guided filter's trick) the inputs are
    shrunk by ``subsample`` (bilinear, antialiased), fitted there with ``radius / subsample`` (at
    least 1), and the fitted arrays upsampled bilinearly to full resolution band by band.
    """
    h, w = inputs[0].shape[:2]
    if subsample == 1:
        return _windowed(*make_fit(radius), inputs)
    lh, lw = max(1, round(h / subsample)), max(1, round(w / subsample))
    small = tuple(None if x is None else _shrink(x, lh, lw) for x in inputs)
    fitted = _collect(_windowed(*make_fit(max(1, round(radius / subsample))), small), lh, lw)
    return _upsampled(fitted, h, w)


# ----------------------------------------------------------------------------------------------
# the guided filter
# ----------------------------------------------------------------------------------------------


def _solve_sym3(cov: np.ndarray, rhs: np.ndarray, eps: float) -> np.ndarray:
    """Solve (cov + eps I) a = rhs per pixel; ``cov`` packs (xx, xy, xz, yy, yz, zz) on the last axis."""
    xx, xy, xz, yy, yz, zz = (cov[..., i] for i in range(6))
    xx, yy, zz = xx + eps, yy + eps, zz + eps
    # adjugate of the symmetric matrix; det = first row . first cofactor column
    c00 = yy * zz - yz * yz
    c01 = xz * yz - xy * zz
    c02 = xy * yz - xz * yy
    c11 = xx * zz - xz * xz
    c12 = xy * xz - xx * yz
    c22 = xx * yy - xy * xy
    det = xx * c00 + xy * c01 + xz * c02
    u, v, t = rhs[..., 0], rhs[..., 1], rhs[..., 2]
    a = np.stack([c00 * u + c01 * v + c02 * t, c01 * u + c11 * v + c12 * t, c02 * u + c12 * v + c22 * t], -1)
    return a / det[..., None]


def _weighted_box_mean(x: np.ndarray, w: np.ndarray | None, r: int):
    """Box mean of HxWxC ``x`` weighted by HxW ``w`` (plain mean when None); returns (mean, box mean of w)."""
    if w is None:
        return box_mean(x, r), None
    m = box_mean(np.concatenate([w[..., None], x * w[..., None]], -1), r)
    return m[..., 1:] / m[..., :1], m[..., 0]


_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _linear_coefficients(g: np.ndarray, p: np.ndarray, w: np.ndarray | None, r: int, eps: float):
    """Per-window (weighted) least-squares fit p ~ a.g + b; returns (a HxWxC, b HxW, window weight HxW)."""
    c = g.shape[2]
    pairs = _PAIRS if c == 3 else ((0, 0),)
    gp = g * p[..., None]
    gg = np.stack([g[..., i] * g[..., j] for i, j in pairs], -1)
    stack = np.concatenate([g, p[..., None], gp, gg], -1)
    means, wbar = _weighted_box_mean(stack, w, r)
    mu, pm, gpm, ggm = means[..., :c], means[..., c], means[..., c + 1: 2 * c + 1], means[..., 2 * c + 1:]
    cov_gp = gpm - mu * pm[..., None]
    cov_gg = ggm - np.stack([mu[..., i] * mu[..., j] for i, j in pairs], -1)
    a = _solve_sym3(cov_gg, cov_gp, eps) if c == 3 else cov_gp / (cov_gg + eps)
    b = pm - np.sum(a * mu, -1)
    return a, b, wbar


def _average_coefficients(a: np.ndarray, b: np.ndarray, wbar: np.ndarray | None, r: int):
    """Mean of every window's (a, b) covering each pixel, weighted by the windows' confidence."""
    m, _ = _weighted_box_mean(np.concatenate([a, b[..., None]], -1), wbar, r)
    return m[..., :-1], m[..., -1]


def _guided_coefficients(r: int, eps: float) -> tuple:
    """``(fit, halo)``: rows of guide, src, weights -> the averaged coefficients (mean a, mean b) of those rows."""
    def fit(g, p, w):
        weights = None if w is None else w.astype(np.float64)
        a, b, wbar = _linear_coefficients(_as_guide(g), p.astype(np.float64), weights, r, eps)
        return _average_coefficients(a, b, wbar, r)
    return fit, 2 * r  # a window of windows


def _check_filter_args(g: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int) -> None:
    if src.ndim != 2 or src.shape != g.shape[:2]:
        raise EdgesegError(f"src must be HxW matching the guide {g.shape[:2]}, got shape {src.shape}")
    if int(radius) < 1:
        raise EdgesegError(f"radius must be >= 1, got {radius}")
    if not eps > 0:
        raise EdgesegError(f"eps must be > 0, got {eps}")
    if int(subsample) < 1:
        raise EdgesegError(f"subsample must be >= 1, got {subsample}")


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, *,
                  weights: np.ndarray | None = None, subsample: int = 1) -> np.ndarray:
    """Guided filter of ``src`` (float HxW) steered by ``guide`` (HxW gray or HxWx3 colour).

    Promise: the output is ``mean_a(x) . I(x) + mean_b(x)`` where, for every (2r+1)^2 window
    (clipped at the image border), ``(a, b)`` minimise ``mean (a . I + b - src)^2 + eps |a|^2``
    (ridge regression; the 3x3 colour covariance is used in full), and ``mean_a``/``mean_b``
    average the coefficients of all windows covering the pixel - exactly He et al.'s filter.
    A uint8 guide is scaled to [0, 1] (so ``eps`` is in those units); float guides are used as is.
    Cost is O(1) per pixel in ``radius``; computed in float64 a band of rows at a time, so memory
    beyond the inputs is the float32 result plus a few MB.

    ``weights`` (HxW, > 0): weighted means in that objective (weighted least squares), and each
    window's coefficients count in proportion to its mean weight; equal weights give the plain
    filter.
    ``subsample`` > 1: the fast guided filter - coefficients are fitted on a copy shrunk by that
    factor (radius divided by it, at least 1) and upsampled bilinearly before being applied to
    the full-resolution guide. Returns float32 HxW (not clipped).
    """
    guide, src = _check_guide(guide), np.asarray(src)
    _check_filter_args(guide, src, radius, eps, subsample)
    if weights is not None:
        weights = np.asarray(weights)
        if weights.shape != src.shape or not np.all(weights > 0):
            raise EdgesegError(f"weights must be positive with src's shape {src.shape}, got shape {weights.shape}")
    coefficients = _fit_rows(lambda r: _guided_coefficients(r, eps), int(radius), (guide, src, weights), int(subsample))
    out = np.empty(src.shape, np.float32)
    for y0, y1, _, _ in row_bands(*src.shape):
        ma, mb = coefficients(y0, y1)
        out[y0:y1] = np.sum(ma * _as_guide(guide[y0:y1]), -1) + mb
    return out


# ----------------------------------------------------------------------------------------------
# matte refinement
# ----------------------------------------------------------------------------------------------


def default_radius(height: int, width: int) -> int:
    """Guided-filter radius for ``refine_alpha``: 1% of the short side, at least 2 px."""
    return max(2, int(round(0.01 * min(height, width))))


def default_subsample(radius: int) -> int:
    """Fast-guided-filter factor for ``radius``: fit with a radius of about 4 px (1 below r = 8)."""
    return max(1, int(radius) // FAST_FIT_RADIUS)


def confidence(alpha: np.ndarray) -> np.ndarray:
    """How sure a matte is at each pixel: ``|2 alpha - 1| ** 8`` (1 at 0 and 1, 0 at 0.5)."""
    return np.abs(2.0 * np.asarray(alpha, dtype=np.float64) - 1.0) ** CONFIDENCE_POWER


def _masked_means(g: np.ndarray, weights: list[np.ndarray], radii: list[int]):
    """Weighted local mean colours, one per weight map, each at the finest radius with enough weight.

    Returns a list of (mean HxWx3, found HxW bool); ``found`` is False where even the largest
    window holds (almost) no weight.
    """
    k = len(weights)
    stack = np.concatenate([np.stack(weights, -1)] + [g * w[..., None] for w in weights], -1)
    means, found = [None] * k, [None] * k
    for r in sorted(radii, reverse=True):
        m = box_mean(stack, r)
        for i in range(k):
            wm = m[..., i]
            ok = wm > SAMPLE_FLOOR
            col = m[..., k + 3 * i: k + 3 * i + 3] / np.maximum(wm, 1e-12)[..., None]
            means[i] = col if means[i] is None else np.where(ok[..., None], col, means[i])
            found[i] = ok if found[i] is None else found[i] | ok
    return list(zip(means, found))


def _local_colours(radius: int) -> tuple:
    """``(fit, halo)``: rows of image, alpha, confidence -> local foreground and background colours.

    The colours F and B are means over confidently labelled pixels within ``radius``, doubling
    the window where none is in reach (``radius * (1, 2, 4)``); ``found`` (1.0 or 0.0) says
    whether both colours were seen.
    """
    radii = [radius * 2**k for k in range(SAMPLE_SCALES)]

    def fit(g, alpha, conf):
        a, c = alpha.astype(np.float64), conf.astype(np.float64)
        (f, f_ok), (b, b_ok) = _masked_means(_as_guide(g), [c * (a > 0.5), c * (a < 0.5)], radii)
        return f, b, (f_ok & b_ok).astype(np.float64)
    return fit, radii[-1]


def _solve_compositing(g, alpha, conf, f, b, found) -> np.ndarray:
    """Alpha from ``I = alpha F + (1 - alpha) B`` (projection on the F-B line), in the uncertain band.

    The colour estimate is trusted in proportion to how far apart F and B are; confident pixels
    keep their alpha.
    """
    d = f - b
    dd = np.sum(d * d, -1)
    colour_alpha = np.clip(np.sum((g - b) * d, -1) / np.maximum(dd, 1e-12), 0.0, 1.0)
    trust = dd / (dd + COLOUR_SEPARATION) * found
    estimate = trust * colour_alpha + (1.0 - trust) * alpha
    return conf * alpha + (1.0 - conf) * estimate


def _colour_estimate(image: np.ndarray, alpha: np.ndarray, r: int, s: int) -> np.ndarray:
    """Step (1) of ``refine_alpha``: alpha re-estimated from local F, B colours (float32 HxW).

    ``alpha`` is float32 HxW in [0, 1]. F and B are means over windows of >= 4 r px: fitting them
    at 1/(r/2) resolution loses nothing.
    """
    conf = _map_rows(confidence, alpha)
    colours = _fit_rows(_local_colours, SAMPLE_RADIUS_FACTOR * r, (image, alpha, conf), max(s, r // 2))
    estimate = np.empty(alpha.shape, np.float32)
    for y0, y1, _, _ in row_bands(*alpha.shape):
        f, b, found = colours(y0, y1)
        a, c = alpha[y0:y1].astype(np.float64), conf[y0:y1].astype(np.float64)
        estimate[y0:y1] = _solve_compositing(_as_guide(image[y0:y1]), a, c, f, b, found > 0.5)
    return estimate


def _clipped_float32(alpha: np.ndarray) -> np.ndarray:
    """``alpha`` clipped to [0, 1] as float32: the array itself when it already is (no copy), else a copy."""
    if alpha.dtype == np.float32 and (alpha.size == 0 or (alpha.min() >= 0.0 and alpha.max() <= 1.0)):
        return alpha
    return np.clip(alpha.astype(np.float32), 0.0, 1.0)


def _check_matte_inputs(image: np.ndarray, alpha: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EdgesegError(f"image must be uint8 HxWx3, got {image.dtype} shape {image.shape}")
    if alpha.shape != image.shape[:2]:
        raise EdgesegError(f"alpha shape {alpha.shape} != image size {image.shape[:2]}")
    if not np.all(np.isfinite(alpha)):
        raise EdgesegError("alpha contains NaN or infinite values")


def refine_alpha(image_uint8_hwc: np.ndarray, alpha: np.ndarray, *, radius: int | None = None,
                 eps: float = 1e-4, subsample: int | None = None) -> np.ndarray:
    """Sharpen a soft foreground matte (float HxW in [0, 1]) along the photo's own edges.

    Promise: returns float32 HxW in [0, 1], the image's size. Where the matte is confident
    (alpha near 0 or 1: interior, far background) it is kept (see below). In the uncertain band left by
    upsampling a low-resolution prediction, alpha is re-estimated from the full-resolution
    colours: (1) local foreground and background colours F, B are averaged from confidently
    labelled pixels (within 4-16 x ``radius``) and the compositing equation
    ``I = alpha F + (1 - alpha) B`` is solved per pixel; (2) a confidence-weighted guided filter
    (``radius``, ``eps``) then regularises that estimate along the image's edges. So the outline
    moves onto the colour edge and thin structures of foreground colour (hair strands, 1-2 px)
    that the blur had faded below 0.5 come back above it, with fractional alpha where the photo
    shows a colour mix. Confident pixels change only by the guided filter's smoothing next to
    the band (a few hundredths). Limits: detail is recovered only inside the matte's soft band
    (where the model gave some probability) and where F and B differ in colour - where they do
    not, the input alpha is only smoothed over ``radius``; wrong confident labels are propagated,
    not corrected; a multi-coloured subject or background blurs F and B and weakens the estimate.
    A hard 0/1 mask counts as confident everywhere: it gets the guided filter alone, which moves
    its edges onto the colour edges but cannot restore thin structures.

    ``radius`` defaults to 1% of the short side (at least 2 px); ``eps`` (colours in [0, 1])
    trades edge sharpness for noise; ``subsample`` (default ``radius // 4``: 1 below a ~750-px
    short side, 2 at 1024x768, 7 at 4000x3000) fits colours and filter coefficients at
    1/subsample resolution for speed, still solving for every full-resolution pixel.

    Memory: a few float32 copies of the matte (4 bytes per pixel each) plus bands of float64
    work; the colour guide is never held as floats at full resolution.
    """
    image, alpha = np.asarray(image_uint8_hwc), np.asarray(alpha)
    _check_matte_inputs(image, alpha)
    h, w = alpha.shape
    r = default_radius(h, w) if radius is None else int(radius)
    s = default_subsample(r) if subsample is None else int(subsample)
    if r < 1 or s < 1:
        raise EdgesegError(f"radius and subsample must be >= 1, got {r} and {s}")
    estimate = _colour_estimate(image, _clipped_float32(alpha), r, s)
    weights = _map_rows(lambda e: confidence(e) + WEIGHT_FLOOR, estimate)
    q = guided_filter(image, estimate, r, eps, weights=weights, subsample=s)
    return np.clip(q, 0.0, 1.0, out=q)
