"""Output modes of ``edgeseg predict``: masks, mattes, cut-outs and composites (layer 1: numpy + Pillow).

Every function takes plain arrays - ``image`` uint8 HxWx3 RGB, ``alpha`` float HxW in [0, 1]
(the foreground matte, soft or hard), ``classes`` integer HxW (class index per pixel) - checks
that their shapes agree, and returns a ``PIL.Image`` ready to save. Bad inputs raise
``EdgesegError`` with a one-line message. Alpha values outside [0, 1] are clipped; NaN is refused.

Colours are straight (not premultiplied) and composites use ``out = alpha * fg + (1 - alpha) * bg``
in 8-bit sRGB values, rounded to the nearest integer.

Memory: results are computed a band of rows (``row_bands``) at a time in float64 and written
into the uint8 result, so a composite needs a few bytes per pixel beyond its inputs and output,
whatever the photo's size (the background blur keeps one float32 copy of 4 channels).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
from PIL import Image

from edgeseg.errors import EdgesegError

#: Portrait-mode blur: Gaussian sigma = strength x this fraction of the image diagonal.
BLUR_SIGMA_PER_DIAGONAL = 0.01
#: Background weight floor below which the masked blur falls back to a plain blur.
MASKED_BLUR_FLOOR = 1e-3
#: About how many pixels one band of work holds (``row_bands``); its float64 temporaries stay a few MB.
BAND_PIXELS = 1 << 14


def row_bands(height: int, width: int, *, halo: int = 0) -> Iterator[tuple[int, int, int, int]]:
    """Split rows ``0..height`` into bands of about ``BAND_PIXELS`` pixels (at least 8 rows).

    Yields ``(y0, y1, lo, hi)``: the band is rows ``[y0, y1)``; rows ``[lo, hi)`` extend it by
    ``halo`` rows each side (clipped to the image), so a window of radius <= ``halo`` around any
    row of the band stays inside ``[lo, hi)`` or meets the image border there.
    """
    rows = max(8, BAND_PIXELS // max(1, width))
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        yield y0, y1, max(0, y0 - halo), min(height, y1 + halo)


def _palette_colours() -> np.ndarray:
    """The PASCAL VOC colour map: 256 RGB colours, index 0 black, neighbouring indices far apart."""
    idx = np.arange(256)
    colours = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):
        for ch in range(3):
            colours[:, ch] |= ((idx >> ch) & 1) << (7 - shift)
        idx = idx >> 3
    return colours.astype(np.uint8)


#: Fixed palette of every mask and overlay: class i is drawn in PALETTE[i] (0 = background, black).
PALETTE = _palette_colours()


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise EdgesegError(f"image must be uint8 HxWx3 RGB, got {image.dtype} shape {image.shape}")
    return image


def _check_alpha(alpha: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Alpha as given (no copy) once checked: HxW, finite; ``size`` (H, W) must match when given.

    Read it with ``_alpha_rows``, which clips to [0, 1].
    """
    alpha = np.asarray(alpha)
    if alpha.ndim != 2 or (size is not None and alpha.shape != tuple(size)):
        want = f" {size[0]}x{size[1]} like the image" if size is not None else ""
        raise EdgesegError(f"alpha must be HxW{want}, got shape {alpha.shape}")
    if not (np.issubdtype(alpha.dtype, np.number) or alpha.dtype == bool):
        raise EdgesegError(f"alpha must be a numeric array, got {alpha.dtype}")
    if np.issubdtype(alpha.dtype, np.inexact) and not np.isfinite(alpha).all():
        raise EdgesegError("alpha contains NaN or infinite values")
    return alpha


def _alpha_rows(alpha: np.ndarray, y0: int, y1: int) -> np.ndarray:
    """Rows ``[y0, y1)`` of a checked alpha as float64 clipped to [0, 1]."""
    return np.clip(alpha[y0:y1].astype(np.float64), 0.0, 1.0)


def _check_classes(classes: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Class map as uint8 HxW; integer values 0..255 only; ``size`` must match when given."""
    classes = np.asarray(classes)
    if classes.ndim != 2 or (size is not None and classes.shape != tuple(size)):
        want = f" {size[0]}x{size[1]} like the image" if size is not None else ""
        raise EdgesegError(f"classes must be HxW{want}, got shape {classes.shape}")
    if not (np.issubdtype(classes.dtype, np.integer) or classes.dtype == bool):
        raise EdgesegError(f"classes must be an integer array, got {classes.dtype}")
    if classes.size and (classes.min() < 0 or classes.max() > 255):
        raise EdgesegError(f"class indices must be in 0..255, got {classes.min()}..{classes.max()}")
    return classes.astype(np.uint8)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _blend(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``round(alpha * fg + (1 - alpha) * bg)`` as uint8 (fg, bg ...x3 float or uint8, alpha float64)."""
    a = alpha[..., None]
    return _to_u8(a * fg + (1.0 - a) * bg)


def _by_bands(height: int, width: int, channels: int, band: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """A uint8 HxW (``channels`` 0) or HxWxC array filled band by band with ``band(y0, y1)``."""
    out = np.empty((height, width, channels) if channels else (height, width), np.uint8)
    for y0, y1, _, _ in row_bands(height, width):
        out[y0:y1] = band(y0, y1)
    return out


# ----------------------------------------------------------------------------------------------
# masks and mattes
# ----------------------------------------------------------------------------------------------


def palette_mask(classes: np.ndarray) -> Image.Image:
    """Class map as a palette ('P') image: pixel value = class index, colours from ``PALETTE``.

    Promise: saved as PNG and read back, ``np.asarray(Image.open(path))`` equals ``classes``.
    """
    img = Image.fromarray(_check_classes(classes), "P")
    img.putpalette(PALETTE.reshape(-1).tolist())
    return img


def alpha_matte(alpha: np.ndarray) -> Image.Image:
    """The matte as a grayscale ('L') image: value = round(alpha * 255)."""
    alpha = _check_alpha(alpha)
    matte = _by_bands(*alpha.shape, 0, lambda y0, y1: _to_u8(_alpha_rows(alpha, y0, y1) * 255.0))
    return Image.fromarray(matte, "L")


def cutout(image: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """The subject on a transparent background: RGBA with the image's RGB and A = round(alpha * 255).

    Colours are left straight (not premultiplied), so soft edges keep the photo's colours.
    """
    image = _check_image(image)
    alpha = _check_alpha(alpha, image.shape[:2])
    rgba = _by_bands(*alpha.shape, 4, lambda y0, y1: np.dstack(
        [image[y0:y1], _to_u8(_alpha_rows(alpha, y0, y1) * 255.0)]))
    return Image.fromarray(rgba, "RGBA")


# ----------------------------------------------------------------------------------------------
# composites
# ----------------------------------------------------------------------------------------------


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT lengths with only small prime factors are fast)."""
    best = 1 << max(0, (n - 1).bit_length())
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 5
        p3 *= 3
    return best


def _gaussian_blur_axis(x: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Exact 1-D Gaussian blur of float ``x`` along ``axis`` (0 or 1), float64.

    FFT over the axis mirrored by at least 3 sigma each side and padded (bottom/right) to a fast
    FFT length. Blurring axis 1 then axis 0 equals the 2-D FFT blur of the image mirrored on both
    axes, because padding and the Gaussian's transfer function both separate by axis.
    """
    n = x.shape[axis]
    pad = int(np.ceil(3 * sigma))
    m = _fft_size(n + 2 * pad)
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, m - n - pad)
    xp = np.pad(x, widths, mode="symmetric")
    shape = [1] * x.ndim
    shape[axis] = -1
    transfer = np.exp(-2.0 * (np.pi * sigma * np.fft.rfftfreq(m)) ** 2).reshape(shape)
    out = np.fft.irfft(np.fft.rfft(xp, axis=axis) * transfer, n=m, axis=axis)
    keep = [slice(None)] * x.ndim
    keep[axis] = slice(pad, pad + n)
    return out[tuple(keep)]


def _blur_stack_rows(image: np.ndarray, alpha: np.ndarray, y0: int, y1: int, sigma: float) -> np.ndarray:
    """Rows [y0, y1) of the masked-blur stack (rgb * (wb + floor), wb with wb = (1 - alpha)^2), blurred along x."""
    wb = (1.0 - _alpha_rows(alpha, y0, y1)) ** 2
    rgb = image[y0:y1].astype(np.float64)
    stack = np.concatenate([rgb * (wb + MASKED_BLUR_FLOOR)[..., None], wb[..., None]], -1)
    return _gaussian_blur_axis(stack, sigma, 1)


def _masked_background(blurred: np.ndarray) -> np.ndarray:
    """Background-only colours from the blurred stack: a normalised convolution.

    ``(blur(rgb wb) + floor blur(rgb)) / (blur(wb) + floor)`` - the two numerator terms are
    blurred as one, ``blur(rgb (wb + floor))``, by linearity - which tends to the plain blur
    where no background is near.
    """
    return blurred[..., :3] / (np.maximum(blurred[..., 3:], 0.0) + MASKED_BLUR_FLOOR)


def _blur_composite(image: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    """``alpha * image + (1 - alpha) * background_only_blur`` as uint8 HxWx3.

    The background is blurred alone - a normalised convolution with weights (1 - alpha)^2 - so
    it does not pick up the subject's colours (no halo around the subject after compositing);
    where no background is within reach (deep inside a large subject) it falls back to a plain
    blur. Separable: rows are blurred band by band into one float32 HxWx4 copy, then columns
    strip by strip, each strip composited as soon as it is blurred.
    """
    h, w = alpha.shape
    across = np.empty((h, w, 4), np.float32)
    for y0, y1, _, _ in row_bands(h, w):
        across[y0:y1] = _blur_stack_rows(image, alpha, y0, y1, sigma)
    out = np.empty((h, w, 3), np.uint8)
    cols = max(1, BAND_PIXELS // max(1, h))
    for x0 in range(0, w, cols):
        x1 = min(w, x0 + cols)
        background = _masked_background(_gaussian_blur_axis(across[:, x0:x1], sigma, 0))
        a = np.clip(alpha[:, x0:x1].astype(np.float64), 0.0, 1.0)
        out[:, x0:x1] = _blend(image[:, x0:x1], background, a)
    return out


def blur_background(image: np.ndarray, alpha: np.ndarray, *, strength: float = 1.0) -> Image.Image:
    """Portrait mode: the sharp subject over a blurred copy of its own background (RGB).

    Promise: the result is ``alpha * image + (1 - alpha) * blurred_background``; pixels with
    alpha = 1 are exactly the input. The background is blurred with a Gaussian of sigma =
    ``strength`` x 1% of the image diagonal (so the look does not depend on resolution), using a
    normalised (masked) blur that keeps the subject's colours out of it. ``strength`` 0 returns
    the image unchanged. Memory: about 16 bytes per pixel beyond the inputs and the result.
    """
    image = _check_image(image)
    alpha = _check_alpha(alpha, image.shape[:2])
    if not (np.isfinite(strength) and strength >= 0):
        raise EdgesegError(f"strength must be a number >= 0, got {strength}")
    h, w = alpha.shape
    sigma = strength * BLUR_SIGMA_PER_DIAGONAL * float(np.hypot(h, w))
    if sigma < 0.3:  # below a third of a pixel a Gaussian changes nothing visible
        return Image.fromarray(image.copy(), "RGB")
    return Image.fromarray(_blur_composite(image, alpha, sigma), "RGB")


def _cover(background: np.ndarray, h: int, w: int) -> np.ndarray:
    """``background`` scaled (aspect kept) to cover h x w and centre-cropped to exactly that size."""
    bh, bw = background.shape[:2]
    scale = max(h / bh, w / bw)
    crop_w, crop_h = w / scale, h / scale
    left, top = (bw - crop_w) / 2, (bh - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return np.asarray(Image.fromarray(background, "RGB").resize((w, h), Image.BICUBIC, box=box))


def replace_background(image: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> Image.Image:
    """The subject composited over a new background (RGB, the image's size).

    Promise: ``background`` (uint8 HxWx3, any size) is scaled to cover the image with its aspect
    ratio kept and centre-cropped; then ``alpha * image + (1 - alpha) * background``. Pixels with
    alpha = 0 are exactly the (scaled) background, alpha = 1 exactly the image; a background of
    the image's size is used as is.
    """
    image = _check_image(image)
    alpha = _check_alpha(alpha, image.shape[:2])
    background = np.asarray(background)
    if background.dtype != np.uint8 or background.ndim != 3 or background.shape[2] != 3 or 0 in background.shape:
        raise EdgesegError(
            f"background must be uint8 HxWx3 RGB, got {background.dtype} shape {background.shape}")
    bg = _cover(background, *alpha.shape)
    rgb = _by_bands(*alpha.shape, 3, lambda y0, y1: _blend(image[y0:y1], bg[y0:y1], _alpha_rows(alpha, y0, y1)))
    return Image.fromarray(rgb, "RGB")


def _boundaries(classes: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (a 1-px line on each side of every boundary)."""
    edge = np.zeros(classes.shape, dtype=bool)
    dy = classes[1:, :] != classes[:-1, :]
    dx = classes[:, 1:] != classes[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def _overlay_rows(image: np.ndarray, classes: np.ndarray, opacity: float, y0: int, y1: int, lo: int, hi: int):
    """Rows [y0, y1) of the overlay; rows [lo, hi) add the neighbours the boundary test needs."""
    band = classes[y0:y1]
    colour = PALETTE[band].astype(np.float64)
    tint = np.where(band > 0, opacity, 0.0)
    tint = np.where(_boundaries(classes[lo:hi])[y0 - lo: y1 - lo], 1.0, tint)
    return _blend(colour, image[y0:y1], tint)


def overlay(image: np.ndarray, classes: np.ndarray, *, opacity: float = 0.5) -> Image.Image:
    """Inspection view (RGB): each class tinted with its ``PALETTE`` colour, boundaries drawn solid.

    Promise: class-0 (background) pixels keep the photo's colours; other pixels are
    ``(1 - opacity) * image + opacity * PALETTE[class]``; pixels next to a different class are
    painted ``PALETTE[class]`` at full strength (black on the background side).
    """
    image = _check_image(image)
    classes = _check_classes(classes, image.shape[:2])
    if not 0.0 <= opacity <= 1.0:
        raise EdgesegError(f"opacity must be in [0, 1], got {opacity}")
    h, w = classes.shape
    out = np.empty((h, w, 3), np.uint8)
    for y0, y1, lo, hi in row_bands(h, w, halo=1):
        out[y0:y1] = _overlay_rows(image, classes, opacity, y0, y1, lo, hi)
    return Image.fromarray(out, "RGB")
