"""Reading images and masks robustly (layer 1).

Any problem (missing, unreadable, wrong mode, more pixels than Pillow's decompression-bomb limit)
raises DataError naming the file.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from edgeseg.errors import DataError

#: The image files edgeseg reads from a folder (predict, datasets, calibration, conversions): the one list of them.
#: A GIF is read as its first frame.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# JPEG-compressed (MPO: a camera's multi-picture JPEG): never a label mask, whatever the file's name
LOSSY_FORMATS = ("JPEG", "MPO")
# Pillow converts premultiplied-alpha modes only to their straight-alpha twins, not to RGB
_STRAIGHT_ALPHA = {"La": "LA", "RGBa": "RGBA"}


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when empty), for a one-line error."""
    return (str(exc).splitlines() or [""])[0][:120] or type(exc).__name__


def _too_large(path: Path, pixels: str, limit: int) -> DataError:
    return DataError(f"{path}: image of {pixels} pixels is over the limit of {limit} pixels "
                     "(PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); not read")


def _check_pixels(path: Path, img: Image.Image) -> None:
    """Refuse an image with more pixels than ``Image.MAX_IMAGE_PIXELS`` before it is decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        img.close()
        raise _too_large(path, f"{img.width}x{img.height} = {img.width * img.height}", limit)


def _open(path: Path) -> Image.Image:
    """Open and decode ``path``; DataError naming the file when it is missing, unreadable or too large.

    Up to ``Image.MAX_IMAGE_PIXELS`` Pillow decodes; above it (where Pillow would warn, and
    above twice it raise) the file is refused before its pixels are decoded.
    """
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image; give one image file (edgeseg predict FOLDER --out DIR "
                        "segments a folder)")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():  # this call only: the size is checked below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        _check_pixels(path, img)
        img.load()
        return img
    except Image.DecompressionBombError as exc:  # over twice the limit: Pillow refuses in open()
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, found[1] if found else "too many", Image.MAX_IMAGE_PIXELS) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from None


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from any PIL mode: 16-bit and 32-bit gray are rescaled, alpha dropped
    (premultiplied alpha undone first)."""
    if img.mode in _STRAIGHT_ALPHA:
        img = img.convert(_STRAIGHT_ALPHA[img.mode])
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.repeat((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB [H, W, 3], applying its EXIF orientation.

    DataError naming the file when it is missing, unreadable, or has more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS`` (then nothing is decoded). Memory: the decoded image once
    plus the returned array; no further full-size copy.
    """
    return read_image(path)[0]


def read_image(path: str | Path) -> tuple[np.ndarray, bytes | None]:
    """``load_image``'s pixels and the colour profile they are in: the file's embedded ICC profile when it
    describes RGB (a Display P3 phone photo's, say), else None (sRGB). Outputs that show the photo's pixels
    carry it on (``edgeseg predict``), so a colour-managed viewer shows them as it shows the photo."""
    img = _open(Path(path))
    profile = rgb_profile(img)
    return to_rgb_array(_upright(img, in_place=True)), profile


def rgb_profile(img: Image.Image) -> bytes | None:
    """The ICC profile embedded in ``img`` when its colour space is RGB, else None. A gray or CMYK profile
    does not describe the RGB pixels edgeseg makes of such an image, so it is not carried on."""
    icc = img.info.get("icc_profile")
    return icc if isinstance(icc, bytes) and len(icc) >= 128 and icc[16:20] == b"RGB " else None


def in_profile(pixels: np.ndarray, source: bytes | None, target: bytes | None) -> np.ndarray:
    """uint8 RGB ``pixels`` in the ICC profile ``source`` converted to ``target`` (None: sRGB), so they look the
    same once tagged with ``target`` (e.g. an sRGB background composited into a Display P3 photo). Returned
    as they are when the profiles are the same, or when Pillow's colour management cannot read one of them."""
    if source == target:
        return pixels
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without littlecms
        return pixels

    def profile(icc: bytes | None):
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)) if icc else ImageCms.createProfile("sRGB")
    try:
        transform = ImageCms.buildTransform(profile(source), profile(target), "RGB", "RGB")
        return np.asarray(ImageCms.applyTransform(Image.fromarray(pixels, "RGB"), transform), dtype=np.uint8)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return pixels


def _upright(img: Image.Image, *, in_place: bool) -> Image.Image:
    """A decoded ``img`` turned by its EXIF orientation, as the photo is meant to be seen: ``img`` itself
    (turned when ``in_place``), or a turned copy. Broken EXIF: ``img`` as stored."""
    try:
        if img.getexif().get(ExifTags.Base.Orientation, 1) == 1:
            return img
        turned = ImageOps.exif_transpose(img, in_place=in_place)
    except (OSError, ValueError, TypeError):
        return img
    return img if turned is None else turned


#: EXIF orientations that turn the photo a quarter: it is shown with its stored width and height swapped
QUARTER_TURNS = (5, 6, 7, 8)


def quarter_turned_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of the image file ``path`` as stored, when its EXIF orientation turns it a quarter (edgeseg
    reads it with width and height swapped, as it is shown), else None; None too when the file cannot be read.
    Reads the header only."""
    try:
        with Image.open(path) as img:
            if img.getexif().get(ExifTags.Base.Orientation, 1) in QUARTER_TURNS:
                return img.size
    except (OSError, ValueError, SyntaxError, TypeError, Image.DecompressionBombError):
        pass
    return None


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A caller's PIL image as uint8 RGB [H, W, 3], upright like a file (the image itself unchanged).

    DataError when Pillow cannot read it (truncated file, closed image, a mode it cannot convert).
    """
    try:
        img.load()  # a lazily opened file decodes here: its errors are the image's, not EXIF's
        return to_rgb_array(_upright(img, in_place=False))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"the PIL image cannot be read ({_reason(exc)}); pass an open, complete image "
                        "(or its pixels as a uint8 RGB array)") from None


def rgb_and_profile(image) -> tuple[np.ndarray, bytes | None]:
    """``as_rgb_array(image)`` and the ICC profile its pixels are in (``rgb_profile``: a file's or a PIL image's
    embedded RGB profile; None for an array, or sRGB)."""
    if isinstance(image, (str, os.PathLike)) and "://" not in os.fsdecode(image):
        return read_image(os.fsdecode(image))
    return as_rgb_array(image), rgb_profile(image) if isinstance(image, Image.Image) else None


def as_rgb_array(image) -> np.ndarray:
    """Any one image a caller may hold, as uint8 RGB [H, W, 3].

    ``image`` is a path (``str`` or any ``os.PathLike``, read with ``load_image``), a PIL image (any
    mode, turned upright by its EXIF orientation like a file; DataError when Pillow cannot read it) or
    a uint8 or uint16 array (16-bit scaled to 8, as for 16-bit files): [H, W, 3] RGB as it is, [H, W] or
    [H, W, 1] gray repeated, [H, W, 4] RGBA without its alpha. DataError, saying what was given, for
    anything else (float arrays included: scale them to 0-255 and cast to uint8 first).
    """
    if isinstance(image, (str, os.PathLike)):
        name = os.fsdecode(image)
        if "://" in name:
            raise DataError(f"{name}: edgeseg reads local files only, it fetches nothing; download the image first")
        return load_image(name)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise DataError(f"image of type {type(image).__name__} is not an image; give a path, a PIL image or a uint8 RGB "
                        "array [H, W, 3]")
    shape = list(image.shape)
    if image.dtype not in (np.uint8, np.uint16) or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise DataError(f"image array is {image.dtype} {shape}; it must be uint8 RGB [H, W, 3] (pixel values 0-255)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"image array {shape} has no pixels")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def load_mask(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Read a class-index mask [H, W] uint8 (palette, gray or 1-bit PNG; 255 = ignore).

    Values outside 0..num_classes-1 (other than 255) and JPEG-compressed files (whatever their name)
    raise DataError naming the file.
    """
    path = Path(path)
    img = _open(path)
    if img.format in LOSSY_FORMATS:
        raise DataError(f"{path}: mask is stored as {img.format}, whose compression changes label values (bogus "
                        "classes at every edge); save masks as PNG from the original label array")
    if img.mode in ("P", "L", "1"):  # "1": a 1-bit mask (Image.fromarray(bool array)), class ids 0 and 1
        mask = np.asarray(img, dtype=np.uint8)  # not img.convert("L"), which makes 1 into 255 (ignore)
    elif img.mode in ("I", "I;16"):
        mask = np.asarray(img)
        if mask.max() > 255:
            raise DataError(f"{path}: mask values up to {int(mask.max())}; expected class indices 0..255: save it as "
                            "an 8-bit L or P PNG of class ids (255 = ignore)")
        mask = mask.astype(np.uint8)
    else:
        raise DataError(f"{path}: mask has mode {img.mode}; expected a single-channel PNG of class indices: save it "
                        "as an 8-bit L or P PNG, one class id per pixel (Image.fromarray(ids.astype(np.uint8)))")
    if num_classes is not None:
        bad = np.unique(mask[(mask >= num_classes) & (mask != 255)])
        if bad.size:
            raise DataError(f"{path}: mask value {int(bad[0])} is outside the class range 0..{num_classes - 1} "
                            "(255 = ignore); relabel it, or list every class in id order (classes.txt or data.classes)")
    return mask


def ignore_is_filled(mask: np.ndarray, band: int = 4) -> bool:
    """Whether the mask's 255 (ignore) pixels include a solid area, not only bands up to ``2 * band``
    pixels wide (as Pascal VOC's void outlines around objects): some pixel has 255 all around it within ``band``."""
    solid = mask == 255
    for _ in range(band):  # erode by one pixel (4-neighbourhood) per step
        if not solid.any():
            return False
        solid[1:-1, 1:-1] &= solid[:-2, 1:-1] & solid[2:, 1:-1] & solid[1:-1, :-2] & solid[1:-1, 2:]
        solid[[0, -1], :] = False
        solid[:, [0, -1]] = False
    return bool(solid.any())
