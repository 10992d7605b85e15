"""Phone-camera corruptions and real photographs for stress parity (layer 1).

Parity images drawn from the calibration distribution cannot show how a quantized file behaves
on anything else. The stress set is those images under the corruptions a phone camera produces
(sensor noise, motion and defocus blur, JPEG artifacts, under/over-exposure, colour casts, low
light, small rotations and crops) plus crops of real photographs that an installed dependency
ships (matplotlib's sample data). Everything is deterministic for a seed; no labels are needed,
because stress parity compares a file with the PyTorch model on the same pixels.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# matplotlib's sample data: a portrait (Grace Hopper) and an indoor product photo
REAL_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def sensor_noise(img, rng):
    """Gaussian read noise plus signal-dependent shot noise."""
    x = img.astype(np.float32)
    sigma = rng.uniform(6, 14) + 0.04 * x
    return _clip(x + rng.standard_normal(x.shape).astype(np.float32) * sigma)


def motion_blur(img, rng):
    """Average along a straight line of 7-15 px at a random angle (a shaken hand)."""
    length, angle = int(rng.integers(7, 16)), rng.uniform(0, np.pi)
    h, w = img.shape[:2]
    pad = length
    x = np.pad(img.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros((h, w, 3), np.float32)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, length):
        dy, dx = int(round(t * np.sin(angle))), int(round(t * np.cos(angle)))
        acc += x[pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return _clip(acc / length)


def defocus_blur(img, rng):
    """Gaussian blur of radius 1.5-3 px (an out-of-focus lens)."""
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 3.0))))


def jpeg(img, rng):
    """Re-encoded as a JPEG of quality 8-25 (blocking and ringing)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(8, 26)))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def underexposure(img, rng):
    return _clip(img.astype(np.float32) * rng.uniform(0.35, 0.6))


def overexposure(img, rng):
    return _clip(img.astype(np.float32) * rng.uniform(1.5, 2.0) + rng.uniform(0, 30))


def color_cast(img, rng):
    """Per-channel gains of a wrong white balance (warm, cool, green or magenta)."""
    gains = np.array([[1.25, 1.0, 0.75], [0.8, 0.95, 1.25], [0.9, 1.2, 0.9], [1.15, 0.85, 1.15]], np.float32)
    return _clip(img.astype(np.float32) * gains[rng.integers(len(gains))])


def low_light(img, rng):
    """Dark, noisy and coarsely quantized, as a phone's night shot before denoising."""
    dark = img.astype(np.float32) * rng.uniform(0.15, 0.3)
    noisy = dark + rng.standard_normal(dark.shape).astype(np.float32) * rng.uniform(3, 6)
    return _clip(np.round(noisy / 4) * 4)


def rotation(img, rng):
    """A small tilt (2-8 degrees either way), corners filled by the edge colour."""
    angle = rng.uniform(2, 8) * rng.choice([-1, 1])
    im = Image.fromarray(img)
    return np.asarray(im.rotate(angle, resample=Image.BILINEAR, fillcolor=tuple(int(v) for v in img[0, 0])))


def crop(img, rng):
    """A 70-90% crop at a random place, resized back (a closer framing)."""
    h, w = img.shape[:2]
    f = rng.uniform(0.7, 0.9)
    ch, cw = max(1, int(h * f)), max(1, int(w * f))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.asarray(Image.fromarray(img[y:y + ch, x:x + cw]).resize((w, h), Image.BILINEAR))


CORRUPTIONS: dict[str, Corruption] = {
    "sensor_noise": sensor_noise, "motion_blur": motion_blur, "defocus_blur": defocus_blur, "jpeg": jpeg,
    "underexposure": underexposure, "overexposure": overexposure, "color_cast": color_cast,
    "low_light": low_light, "rotation": rotation, "crop": crop,
}

# the ones that keep every pixel where it was (training applies them without touching the mask)
PHOTOMETRIC = ("sensor_noise", "motion_blur", "defocus_blur", "jpeg", "underexposure", "overexposure", "color_cast",
               "low_light")


def corrupt(img: np.ndarray, name: str, seed: int) -> np.ndarray:
    """``img`` (uint8 HxWx3) under corruption ``name``, deterministic for ``seed``; same shape and dtype."""
    return CORRUPTIONS[name](np.ascontiguousarray(img, dtype=np.uint8), np.random.default_rng(seed))


# How a photo is framed, in the order ``real_photo_crops`` makes them (and stress sets take them).
FRAMINGS = ("full", "square", "top", "close")
# Real-photo images per parity image: a stress set is one third real photos whatever the number of parity
# images (16 of the 16 real-photo images at the default 16; all 16 from there on).
REAL_PER_IMAGE = 1
# The real photos' corruptions continue the cycle where the default 16 parity images x 2 corruptions leave
# off, whatever the number of parity images: a smaller set's real photos are the first of the default set's.
_REAL_SEED_BASE = 32


def real_photo_crops(size: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """(id, uint8 image at ``size``) for a few framings (``FRAMINGS``) of each real photograph in ``REAL_PHOTOS``."""
    from matplotlib import cbook

    out = []
    h, w = size
    for name in REAL_PHOTOS:
        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as im:
            photo = im.convert("RGB")
        pw, ph = photo.size
        side = min(pw, ph)
        boxes = {
            "full": (0, 0, pw, ph),
            "square": ((pw - side) // 2, (ph - side) // 2, (pw + side) // 2, (ph + side) // 2),
            "top": ((pw - side) // 2, 0, (pw + side) // 2, side),
            "close": (pw // 6, ph // 8, pw - pw // 6, ph - ph // 3),
        }
        for framing in FRAMINGS:
            crop_ = photo.crop(boxes[framing]).resize((w, h), Image.BILINEAR)
            out.append((f"{name.rsplit('.', 1)[0]}:{framing}", np.asarray(crop_)))
    return out


def real_photo_key(image_id: str) -> tuple[int, int, int]:
    """Where a real-photo stress image (``grace_hopper:top``, ``grace_hopper:top:jpeg``) comes in the order
    stress sets take them: framing by framing, clean before corrupted, the photos in turn, so the first few
    cover every photo. Ids it does not know come last."""
    stem, _, rest = image_id.partition(":")
    framing, _, corruption = rest.partition(":")
    stems = [name.rsplit(".", 1)[0] for name in REAL_PHOTOS]
    return (FRAMINGS.index(framing) if framing in FRAMINGS else len(FRAMINGS), int(bool(corruption)),
            stems.index(stem) if stem in stems else len(stems))


def real_photo_count(images: int) -> int:
    """How many real-photo images a stress set of ``images`` parity images holds (``REAL_PER_IMAGE`` each, at
    most all of them), so that its share of real photos does not depend on the number of parity images."""
    return min(images * REAL_PER_IMAGE, 2 * len(REAL_PHOTOS) * len(FRAMINGS))


def real_photo_images(size: tuple[int, int], seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(id, uint8 image) for every real-photo crop, clean and under one corruption, in ``real_photo_key`` order."""
    names = list(CORRUPTIONS)
    out = []
    for j, (photo_id, photo) in enumerate(real_photo_crops(size)):
        k = _REAL_SEED_BASE + j
        name = names[k % len(names)]
        out += [(photo_id, photo), (f"{photo_id}:{name}", corrupt(photo, name, seed * 1_000_003 + k))]
    return sorted(out, key=lambda item: real_photo_key(item[0]))


def stress_images(images: np.ndarray, ids: list[str], size: tuple[int, int], *, per_image: int = 2,
                  seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The stress set: each image under ``per_image`` corruptions (cycling through all of them), then the first
    ``real_photo_count(len(images))`` real-photo images (``real_photo_images``). Returns (uint8 [N,H,W,3], ids)."""
    names = list(CORRUPTIONS)
    out, out_ids = [], []
    k = 0
    for img, i in zip(images, ids):
        for _ in range(per_image):
            name = names[k % len(names)]
            out.append(corrupt(img, name, seed * 1_000_003 + k))
            out_ids.append(f"{i}:{name}")
            k += 1
    for photo_id, photo in real_photo_images(size, seed)[:real_photo_count(len(ids))]:
        out.append(photo)
        out_ids.append(photo_id)
    return np.stack(out), out_ids
