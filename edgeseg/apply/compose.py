"""Output modes of ``edgeseg predict``: masks, mattes, cut-outs and composites (layer 1: numpy + Pillow).

Every function takes plain arrays - ``image`` uint8 HxWx3 RGB, ``alpha`` float HxW in [0, 1]
(the foreground matte, soft or hard), ``classes`` integer HxW (class index per pixel) - checks
that their shapes agree, and returns a ``PIL.Image`` ready to save. Bad inputs raise
``EdgesegError`` with a one-line message. Alpha values outside [0, 1] are clipped; NaN is refused.

Colours are straight (not premultiplied) and composites use ``out = alpha * fg + (1 - alpha) * bg``
in 8-bit sRGB values, rounded to the nearest integer.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from edgeseg.errors import EdgesegError

#: Portrait-mode blur: Gaussian sigma = strength x this fraction of the image diagonal.
BLUR_SIGMA_PER_DIAGONAL = 0.01
#: Background weight floor below which the masked blur falls back to a plain blur.
MASKED_BLUR_FLOOR = 1e-3


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
    """Alpha as float64 HxW clipped to [0, 1]; ``size`` (H, W) must match when given."""
    alpha = np.asarray(alpha)
    if alpha.ndim != 2 or (size is not None and alpha.shape != tuple(size)):
        want = f" {size[0]}x{size[1]} like the image" if size is not None else ""
        raise EdgesegError(f"alpha must be HxW{want}, got shape {alpha.shape}")
    alpha = alpha.astype(np.float64)
    if not np.all(np.isfinite(alpha)):
        raise EdgesegError("alpha contains NaN or infinite values")
    return np.clip(alpha, 0.0, 1.0)


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


def _composite(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """``alpha * fg + (1 - alpha) * bg`` per pixel as an RGB image (fg, bg float or uint8 HxWx3)."""
    a = alpha[..., None]
    return Image.fromarray(_to_u8(a * fg + (1.0 - a) * bg), "RGB")


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
    return Image.fromarray(_to_u8(_check_alpha(alpha) * 255.0), "L")


def cutout(image: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """The subject on a transparent background: RGBA with the image's RGB and A = round(alpha * 255).

    Colours are left straight (not premultiplied), so soft edges keep the photo's colours.
    """
    image = _check_image(image)
    a = _to_u8(_check_alpha(alpha, image.shape[:2]) * 255.0)
    return Image.fromarray(np.dstack([image, a]), "RGBA")


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


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Exact Gaussian blur of HxWxC float ``x`` over the first two axes (FFT, mirrored borders)."""
    h, w = x.shape[:2]
    pad = int(np.ceil(3 * sigma))
    # mirror at least 3 sigma on each side, more at the bottom/right to reach a fast FFT size
    hp, wp = _fft_size(h + 2 * pad), _fft_size(w + 2 * pad)
    xp = np.pad(x, ((pad, hp - h - pad), (pad, wp - w - pad), (0, 0)), mode="symmetric")
    fy = np.fft.fftfreq(hp)[:, None]
    fx = np.fft.rfftfreq(wp)[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))[..., None]
    out = np.fft.irfft2(np.fft.rfft2(xp, axes=(0, 1)) * transfer, s=(hp, wp), axes=(0, 1))
    return out[pad: pad + h, pad: pad + w]


def _background_only_blur(image: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Blur of the background alone: normalised convolution with weights (1 - alpha)^2.

    Subject pixels get (almost) no weight, so the blurred background does not pick up the
    subject's colours - no halo around the subject after compositing. Where no background is
    within reach (deep inside a large subject) it falls back to a plain blur.
    """
    wb = (1.0 - alpha) ** 2
    rgb = image.astype(np.float64)
    stack = np.concatenate([rgb * wb[..., None], wb[..., None], rgb], -1)
    blurred = _gaussian_blur(stack, sigma)
    num, den, plain = blurred[..., :3], blurred[..., 3:4], blurred[..., 4:]
    den = np.maximum(den, 0.0)
    return (num + MASKED_BLUR_FLOOR * plain) / (den + MASKED_BLUR_FLOOR)


def blur_background(image: np.ndarray, alpha: np.ndarray, *, strength: float = 1.0) -> Image.Image:
    """Portrait mode: the sharp subject over a blurred copy of its own background (RGB).

    Promise: the result is ``alpha * image + (1 - alpha) * blurred_background``; pixels with
    alpha = 1 are exactly the input. The background is blurred with a Gaussian of sigma =
    ``strength`` x 1% of the image diagonal (so the look does not depend on resolution), using a
    normalised (masked) blur that keeps the subject's colours out of it. ``strength`` 0 returns
    the image unchanged.
    """
    image = _check_image(image)
    alpha = _check_alpha(alpha, image.shape[:2])
    if not (np.isfinite(strength) and strength >= 0):
        raise EdgesegError(f"strength must be a number >= 0, got {strength}")
    h, w = alpha.shape
    sigma = strength * BLUR_SIGMA_PER_DIAGONAL * float(np.hypot(h, w))
    if sigma < 0.3:  # below a third of a pixel a Gaussian changes nothing visible
        return Image.fromarray(image.copy(), "RGB")
    return _composite(image, _background_only_blur(image, alpha, sigma), alpha)


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
    return _composite(image, _cover(background, *alpha.shape), alpha)


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
    colour = PALETTE[classes].astype(np.float64)
    tint = np.where(classes > 0, opacity, 0.0)
    tint = np.where(_boundaries(classes), 1.0, tint)
    return _composite(colour, image, tint)
