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

import numpy as np
from PIL import Image

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
# the guided filter
# ----------------------------------------------------------------------------------------------


def _as_guide(guide: np.ndarray) -> np.ndarray:
    """Guide as float64 HxWxC (C = 1 or 3); uint8 is scaled to [0, 1], floats are kept."""
    g = np.asarray(guide)
    scale = 1.0 / 255.0 if g.dtype == np.uint8 else 1.0
    g = g.astype(np.float64) * scale
    if g.ndim == 2:
        g = g[..., None]
    if g.ndim != 3 or g.shape[2] not in (1, 3):
        raise EdgesegError(f"guide must be HxW or HxWx3, got shape {np.asarray(guide).shape}")
    return g


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


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of an HxW or HxWxC float array to h x w."""
    chans = x[..., None] if x.ndim == 2 else x
    out = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(chans[..., i], dtype=np.float32), "F")
                    .resize((w, h), Image.BILINEAR)) for i in range(chans.shape[2])], -1)
    return out[..., 0].astype(np.float64) if x.ndim == 2 else out.astype(np.float64)


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
    Cost is O(1) per pixel in ``radius``.

    ``weights`` (HxW, > 0): weighted means in that objective (weighted least squares), and each
    window's coefficients count in proportion to its mean weight; equal weights give the plain
    filter.
    ``subsample`` > 1: the fast guided filter - coefficients are fitted on a copy shrunk by that
    factor (radius divided by it, at least 1) and upsampled bilinearly before being applied to
    the full-resolution guide. Returns float32 HxW (not clipped).
    """
    g = _as_guide(guide)
    p = np.asarray(src, dtype=np.float64)
    _check_filter_args(g, p, radius, eps, subsample)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None and (w.shape != p.shape or not np.all(w > 0)):
        raise EdgesegError(f"weights must be positive with src's shape {p.shape}, got shape {w.shape}")
    h, wd = p.shape
    s, r = int(subsample), int(radius)
    if s > 1:
        lh, lw = max(1, round(h / s)), max(1, round(wd / s))
        g_lo, p_lo = _resize(g, lh, lw), _resize(p, lh, lw)
        w_lo = None if w is None else _resize(w, lh, lw)
        a, b, wbar = _linear_coefficients(g_lo, p_lo, w_lo, max(1, round(r / s)), eps)
        ma, mb = _average_coefficients(a, b, wbar, max(1, round(r / s)))
        ma, mb = _resize(ma, h, wd), _resize(mb, h, wd)
    else:
        a, b, wbar = _linear_coefficients(g, p, w, r, eps)
        ma, mb = _average_coefficients(a, b, wbar, r)
    return (np.sum(ma * g, -1) + mb).astype(np.float32)


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


def _local_colours(g: np.ndarray, alpha: np.ndarray, conf: np.ndarray, radius: int, subsample: int):
    """Local foreground and background colours from confidently labelled pixels near each pixel.

    Searches radii ``radius * (1, 2, 4)`` (fitted at 1/subsample resolution, then upsampled)
    and returns (F, B, found) with found True where both colours were seen.
    """
    h, w = alpha.shape
    if subsample > 1:
        lh, lw = max(1, round(h / subsample)), max(1, round(w / subsample))
        f, b, found = _local_colours(_resize(g, lh, lw), _resize(alpha, lh, lw), _resize(conf, lh, lw),
                                     max(1, round(radius / subsample)), 1)
        return _resize(f, h, w), _resize(b, h, w), _resize(found.astype(np.float64), h, w) > 0.5
    radii = [radius * 2**k for k in range(SAMPLE_SCALES)]
    (f, f_ok), (b, b_ok) = _masked_means(g, [conf * (alpha > 0.5), conf * (alpha < 0.5)], radii)
    return f, b, f_ok & b_ok


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
    """
    image = np.asarray(image_uint8_hwc)
    a = np.asarray(alpha, dtype=np.float64)
    _check_matte_inputs(image, a)
    h, w = a.shape
    r = default_radius(h, w) if radius is None else int(radius)
    s = default_subsample(r) if subsample is None else int(subsample)
    if r < 1 or s < 1:
        raise EdgesegError(f"radius and subsample must be >= 1, got {r} and {s}")
    a = np.clip(a, 0.0, 1.0)
    g = image.astype(np.float64) / 255.0
    conf = confidence(a)
    # F and B are means over windows of >= 4 r px: fitting them at 1/(r/2) resolution loses nothing
    f, b, found = _local_colours(g, a, conf, SAMPLE_RADIUS_FACTOR * r, max(s, r // 2))
    estimate = _solve_compositing(g, a, conf, f, b, found)
    q = guided_filter(g, estimate, r, eps, weights=confidence(estimate) + WEIGHT_FLOOR, subsample=s)
    return np.clip(q, 0.0, 1.0)
