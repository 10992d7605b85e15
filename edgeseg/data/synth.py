"""Deterministic synthetic portrait / person-parts generator (numpy + Pillow only).

Each sample is a person-like figure (head, hair, neck, shoulders, torso, arms, sometimes legs)
over a textured background, with random skin tone, hair type and colour, clothes, lighting,
occlusion, framing and scale. Roughly one image in twenty has no person at all.

The scene is drawn as a label map on a canvas twice the output size; colours are pasted per
label from cheap textures, then the image is box-downsampled (anti-aliased edges) and the mask
takes the majority label of each 2x2 block (see ``_downsample_mask``). Thin hair strands (1-2 px
at the output size) are part of the hair / person class.

Everything random comes from ``np.random.default_rng(seed)``; the image does not depend on the
task (``render("portrait", s, k)`` and ``render("parts", s, k)`` give the same image, and the
portrait mask equals ``parts mask > 0``).
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from edgeseg.errors import DataError
from edgeseg.fsutil import being_installed, check_output, file_holds, install_staged, is_staging, sha256_file, staging_dir

PORTRAIT_CLASSES = ("background", "person")
PARTS_CLASSES = ("background", "hair", "skin", "body", "clothes")
TASKS = {"portrait": PORTRAIT_CLASSES, "parts": PARTS_CLASSES}
SLICE_KEYS = ("skin_tone", "lighting", "hair_type", "background")

SKIN_TONES = ("tone1", "tone2", "tone3", "tone4", "tone5", "tone6")  # light to dark
LIGHTINGS = ("normal", "dim", "bright", "backlit", "colored")
HAIR_TYPES = ("short", "long", "curly", "bald", "strands")
BACKGROUNDS = ("noise", "stripes", "gradient", "blobs", "indoor")
HAIR_TYPE_WEIGHTS = (0.22, 0.22, 0.16, 0.1, 0.3)  # how often each of HAIR_TYPES is drawn
LIGHTING_WEIGHTS = (0.4, 0.15, 0.15, 0.15, 0.15)  # likewise for LIGHTINGS
NO_PERSON = "none"  # skin_tone and hair_type of a sample without a person
SLICE_VALUES = {
    "skin_tone": SKIN_TONES + (NO_PERSON,),
    "lighting": LIGHTINGS,
    "hair_type": HAIR_TYPES + (NO_PERSON,),
    "background": BACKGROUNDS,
}

MIN_SIZE = 16
NO_PERSON_RATE = 0.05
OCCLUSION_RATE = 0.2

# Labels of the 2x drawing canvas. OCCLUDER and PANTS only exist there: they map to
# background and clothes in the masks (``_PARTS_OF``).
BG, HAIR, SKIN, BODY, CLOTHES, OCCLUDER, PANTS = range(7)
_PARTS_OF = (0, 1, 2, 3, 4, 0, 4)
_PASTE_ORDER = (SKIN, HAIR, BODY, CLOTHES, PANTS, OCCLUDER)
_ONLY = [[255 if v == label else 0 for v in range(256)] for label in range(7)]  # point() LUTs
_NOT_BG = [0] + [255] * 255
_NOT_BG_PERSON = [255 if 0 < v < len(_PARTS_OF) and _PARTS_OF[v] else 0 for v in range(256)]
_PART_LUTS = [[255 if v < len(_PARTS_OF) and _PARTS_OF[v] == k else 0 for v in range(256)]
              for k in range(len(PARTS_CLASSES))]

_SKIN_RGB = {
    "tone1": (246, 220, 198),
    "tone2": (234, 192, 160),
    "tone3": (208, 156, 118),
    "tone4": (170, 118, 84),
    "tone5": (122, 82, 56),
    "tone6": (78, 54, 40),
}
_HAIR_RGB = (
    (22, 18, 16),  # black
    (58, 38, 26),  # dark brown
    (104, 68, 42),  # brown
    (196, 160, 104),  # blonde
    (146, 66, 32),  # red
    (150, 148, 142),  # grey
)
_HAIR_WEIGHTS = (0.3, 0.25, 0.15, 0.12, 0.08, 0.1)

Colour = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class Sample:
    """One synthetic sample: RGB image, class-index mask and slice attributes."""

    image: np.ndarray  # uint8 [H, W, 3] RGB
    mask: np.ndarray  # uint8 [H, W] class index (portrait: 0/1; parts: 0..4)
    attrs: dict  # slice attributes, keys SLICE_KEYS, string values


@dataclass(frozen=True)
class _Figure:
    """Geometry of one person on the 2x canvas (pixels)."""

    cx: float  # head centre
    cy: float
    rx: float  # head semi-axes
    ry: float
    bx: float  # torso centre x
    sy: float  # shoulder line y
    sw: float  # shoulder half-width
    hip_y: float
    face: tuple[float, float, float, float]  # centre x, y, semi-axes of the hairless face
    hair_type: str
    style: str  # hair outline drawn: short | long | curly | bald ("strands" uses short or long)
    hair: tuple[float, float, float]  # hair outline ellipse: centre y, semi-axes
    hair_len: float  # how far long hair falls below the chin


@dataclass(frozen=True)
class _Look:
    """Colours of one person."""

    skin: Colour
    body: Colour
    hair: Colour
    clothes: tuple[Colour, Colour]
    pants: Colour


def sample_seed(seed: int, i: int) -> int:
    """Seed of sample ``i`` of a set generated with ``seed`` (used by ``write_dataset``).

    Sets with different seeds are disjoint as long as they hold fewer than 1,000,003 samples.
    """
    return seed * 1_000_003 + i


def render(task: str, size: int | tuple[int, int], seed: int) -> Sample:
    """Render one sample; same (task, size, seed) gives a bit-identical sample.

    ``size`` is ``(height, width)`` or an int for a square image. ``seed`` is a non-negative int.
    Identical across machines for the same numpy and Pillow versions.
    """
    classes = _task_classes(task)
    height, width = _parse_size(size)
    rng = np.random.default_rng(_parse_seed(seed))
    image, canvas_labels, attrs = _render_scene(rng, width, height)
    mask = _downsample_mask(canvas_labels, parts=classes == PARTS_CLASSES)
    return Sample(image=image, mask=mask, attrs=attrs)


SYNTH_MARKER = ".edgeseg-synth.json"  # says a folder was written by write_dataset (so it may replace it)
_SYNTH_NAMES = ("images", "masks", "classes.txt", "slices.csv", SYNTH_MARKER)


def write_dataset(out: str | Path, task: str, count: int, size, seed: int) -> Path:
    """Write ``count`` samples to ``out`` atomically and return ``out``.

    ``out`` may be new, empty, or a folder this function wrote before (it is replaced); any other
    non-empty folder is refused (DataError), so a user's files are never touched.
    Layout: ``images/{id}.png`` (RGB), ``masks/{id}.png`` (mode L, class index),
    ``classes.txt`` (one class name per line), ``slices.csv``
    (``id,skin_tone,lighting,hair_type,background``) and the marker ``.edgeseg-synth.json``.
    ids look like ``synth_000042``; sample ``i`` is ``render(task, size, sample_seed(seed, i))``.
    """
    classes = _task_classes(task)
    count = _parse_count(count)
    _parse_size(size)
    _parse_seed(seed)
    out = check_output(out, is_dir=True, what="output folder")
    _check_synth_target(out)
    digits = max(6, len(str(count - 1)))
    tmp = staging_dir(out)
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        with open(tmp / "slices.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(("id",) + SLICE_KEYS)
            for i in range(count):
                sample_id = f"synth_{i:0{digits}d}"
                sample = render(task, size, sample_seed(seed, i))
                Image.fromarray(sample.image, "RGB").save(
                    tmp / "images" / f"{sample_id}.png", compress_level=1
                )
                Image.fromarray(sample.mask, "L").save(
                    tmp / "masks" / f"{sample_id}.png", compress_level=1
                )
                writer.writerow((sample_id,) + tuple(sample.attrs[k] for k in SLICE_KEYS))
        marker = {"task": task, "count": count, "size": size, "seed": seed, "sha256": file_digests(tmp)}
        (tmp / SYNTH_MARKER).write_text(json.dumps(marker) + "\n")
        install_staged(tmp, out, owned=_SYNTH_NAMES, last=SYNTH_MARKER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_synth_target(out: Path, files_written: Callable[[Path], set[str]] | None = None,
                        marker: str = SYNTH_MARKER) -> None:
    """Refuse a non-empty folder unless an earlier ``write_dataset`` made it and it holds exactly what that
    run wrote (its marker says how many samples; any other file, e.g. a photo added to images/, is the user's),
    unchanged since (the sha256 each file had, which the ``marker`` file records; markers written before
    that was recorded are checked by name only).

    ``files_written(out)`` (default ``_files_written``) lists what the earlier run recorded in ``out`` wrote,
    so other synthetic writers (``clips.write_clips``) share this check.
    """
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir() if not is_staging(p))
    if not entries:
        return
    expected = (files_written or _files_written)(out)
    present = {str(p.relative_to(out)) for p in out.rglob("*") if not is_staging(p.relative_to(out).parts[0])}
    unlisted = sorted(present - expected) if expected else entries
    foreign = [p for p in unlisted if not being_installed(out, p)]  # those: a run killed while installing them
    if foreign:
        raise DataError(f"{out} is not empty ({_few(foreign)}) and was not written by 'edgeseg data synth'; "
                        "choose an empty or new folder")
    changed = _changed_files(out, marker)
    if changed:
        raise DataError(f"{out}: {_few(changed)} changed since 'edgeseg data synth' wrote it, and would be replaced; "
                        "move your changes elsewhere, or choose an empty or new folder")


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path (what a synthetic set's marker records)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _changed_files(out: Path, marker: str) -> list[str]:
    """Files the ``marker`` in ``out`` records whose bytes differ from the sha256 it records; the marker is
    read without trusting it (only relative paths inside ``out`` count)."""
    try:
        recorded = json.loads((out / marker).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(recorded, dict):
        return []
    changed = []
    for rel, sha in recorded.items():
        parts = Path(rel).parts if isinstance(rel, str) else ("..",)
        path = out / rel if parts and ".." not in parts and not Path(rel).is_absolute() else None
        if path is not None and path.is_file() and not (file_holds(path, sha) or being_installed(out, rel)):
            changed.append(rel)
    return sorted(changed)


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def _files_written(out: Path) -> set[str]:
    """Every path (relative, folders included) that the write_dataset run recorded in ``out``'s marker wrote; empty if none."""
    try:
        count = int(json.loads((out / SYNTH_MARKER).read_text())["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    digits = max(6, len(str(count - 1)))
    samples = {f"{sub}/synth_{i:0{digits}d}.png" for sub in ("images", "masks") for i in range(count)}
    return samples | {"images", "masks", "classes.txt", "slices.csv", SYNTH_MARKER}


# ---------------------------------------------------------------------------- arguments


def _task_classes(task: str) -> tuple[str, ...]:
    if task not in TASKS:
        raise DataError(f"unknown synthetic task {task!r}: expected one of {', '.join(TASKS)}")
    return TASKS[task]


def _parse_size(size) -> tuple[int, int]:
    try:
        hw = (operator.index(size),) * 2 if not isinstance(size, (tuple, list)) else size
        height, width = (operator.index(v) for v in hw)
    except (TypeError, ValueError):
        raise DataError(f"synthetic size {size!r}: expected an int or (height, width)") from None
    if min(height, width) < MIN_SIZE:
        raise DataError(f"synthetic size {size!r}: height and width must be >= {MIN_SIZE}")
    return height, width


def _parse_int(value, what: str, minimum: int) -> int:
    expected = "a non-negative int" if minimum == 0 else "a positive int"
    try:
        value = operator.index(value)
    except TypeError:
        raise DataError(f"synthetic {what} {value!r}: expected {expected}") from None
    if value < minimum:
        raise DataError(f"synthetic {what} {value}: expected {expected}")
    return value


def _parse_seed(seed) -> int:
    return _parse_int(seed, "seed", 0)


def _parse_count(count) -> int:
    return _parse_int(count, "count", 1)


# ---------------------------------------------------------------------------- scene


def _render_scene(rng: np.random.Generator, width: int, height: int):
    """Draw one scene; return (uint8 image [H, W, 3], 2x label canvas (mode L), attrs)."""
    w2, h2 = 2 * width, 2 * height
    has_person = rng.random() >= NO_PERSON_RATE
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    hair_type = HAIR_TYPES[rng.choice(len(HAIR_TYPES), p=HAIR_TYPE_WEIGHTS)]
    look = _sample_look(rng, tone)
    bg_kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    lighting = LIGHTINGS[rng.choice(len(LIGHTINGS), p=LIGHTING_WEIGHTS)]

    image = _BACKGROUNDS[bg_kind](rng, w2, h2, _palette(rng, 6, look))
    labels = Image.new("L", (w2, h2), BG)
    fig = None
    if has_person:
        fig = _sample_figure(rng, w2, h2, hair_type)
        _draw_person(rng, ImageDraw.Draw(labels), fig)
        if rng.random() < OCCLUSION_RATE:
            _draw_occluder(rng, ImageDraw.Draw(labels), (w2, h2), labels.getbbox())
    _paint_labels(rng, image, labels, look, fig)

    image = _apply_lighting(rng, image.reduce(2), labels, lighting)
    attrs = {
        "skin_tone": tone if has_person else NO_PERSON,
        "lighting": lighting,
        "hair_type": hair_type if has_person else NO_PERSON,
        "background": bg_kind,
    }
    return image, labels, attrs


def _downsample_mask(canvas: Image.Image, parts: bool) -> np.ndarray:
    """Parts (or portrait if not ``parts``) mask [H, W] from the 2x label canvas [2H, 2W].

    A pixel is person when at least 2 of its 4 canvas pixels are (ties go to the person, so a
    strand 1 px wide at the output size survives); its part is the most frequent person label
    of the block (ties go to the lower class index, i.e. hair first). The portrait mask is
    therefore exactly ``parts mask > 0``.
    """
    out = np.zeros((canvas.height // 2, canvas.width // 2), dtype=np.uint8)
    box = canvas.getbbox()
    if box is None:
        return out
    x0, y0 = box[0] // 2, box[1] // 2  # the crop must start on a 2x2 block
    x1, y1 = (box[2] + 1) // 2, (box[3] + 1) // 2
    crop = canvas.crop((2 * x0, 2 * y0, 2 * x1, 2 * y1))
    # reduce(2) of a 0/255 image gives 64 * (pixels set in the block), rounded: 0, 64, 128, ...
    person = np.asarray(crop.point(_NOT_BG_PERSON).reduce(2)) >= 128
    if not parts:
        out[y0:y1, x0:x1] = person
        return out
    best = np.zeros(person.shape, dtype=np.uint8)
    best_count = np.zeros_like(best)
    for k in (4, 3, 2, 1):  # the last of equal counts wins: lower index first
        count = np.asarray(crop.point(_PART_LUTS[k]).reduce(2))
        best[count >= best_count] = k
        np.maximum(best_count, count, out=best_count)
    best[~person] = 0
    out[y0:y1, x0:x1] = best
    return out


# ---------------------------------------------------------------------------- colours


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> Colour:
    c = np.asarray(colour, dtype=np.float64) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(np.rint(c), 0, 255))


def _scaled(colour: Colour, factor: float) -> Colour:
    return tuple(int(min(255, max(0, round(v * factor)))) for v in colour)


def _random_colour(rng: np.random.Generator) -> Colour:
    if rng.random() < 0.25:  # greys, black and white are common in clothes and rooms
        return (int(rng.integers(10, 246)),) * 3
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _sample_look(rng: np.random.Generator, tone: str) -> _Look:
    skin = _jitter(rng, _SKIN_RGB[tone], 10)
    hair_base = _HAIR_RGB[rng.choice(len(_HAIR_RGB), p=_HAIR_WEIGHTS)]
    hair = _jitter(rng, hair_base, 14) if rng.random() > 0.08 else _random_colour(rng)  # dyed
    top = _random_colour(rng)
    return _Look(
        skin=skin,
        body=_scaled(skin, rng.uniform(0.88, 1.0)),
        hair=hair,
        clothes=(top, _random_colour(rng) if rng.random() < 0.6 else _scaled(top, 0.6)),
        pants=_random_colour(rng),
    )


def _palette(rng: np.random.Generator, n: int, look: _Look) -> list[Colour]:
    """Background colours; some are close to the skin or hair colour to make it hard."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            out.append(_jitter(rng, look.skin, 20))
        elif r < 0.32:
            out.append(_jitter(rng, look.hair, 20))
        else:
            out.append(_random_colour(rng))
    return out


# ---------------------------------------------------------------------------- textures


def _upsampled(grid: np.ndarray, w: int, h: int) -> Image.Image:
    """Bilinear-upsample a small float [gh, gw, 3] colour grid to an RGB image (w, h)."""
    small = Image.fromarray(np.clip(np.rint(grid), 0, 255).astype(np.uint8), "RGB")
    return small.resize((w, h), Image.Resampling.BILINEAR)


def _shaded(rng, w: int, h: int, colour: Colour, cell: tuple[float, float], amp: float):
    """``colour`` with smooth brightness variation of cell size (cell_w, cell_h) pixels."""
    gh, gw = max(2, round(h / cell[1]) + 1), max(2, round(w / cell[0]) + 1)
    shade = rng.uniform(-amp, amp, (gh, gw, 1))
    return _upsampled(np.asarray(colour, dtype=np.float64) + shade, w, h)


def _mottled(rng, w: int, h: int, colours: Sequence[Colour], cell: float) -> Image.Image:
    """Smooth noise mixing ``colours`` with a cell size of about ``cell`` pixels."""
    gh, gw = max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)
    pal = np.asarray(colours, dtype=np.float64)
    return _upsampled(pal[rng.integers(len(pal), size=(gh, gw))], w, h)


def _striped(rng, w: int, h: int, colours: Sequence[Colour], period: int) -> Image.Image:
    """Straight stripes of ``colours`` (cycled), in one of 8 directions."""
    a, b = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2), (2, -1), (1, -2))[rng.integers(8)]
    ys = np.arange(h, dtype=np.int32)[:, None]
    xs = np.arange(w, dtype=np.int32)[None, :]
    phase = int(rng.integers(period))
    idx = ((xs * a + ys * b + phase) // period) % len(colours)
    im = Image.fromarray(idx.astype(np.uint8), "P")
    im.putpalette([v for c in colours for v in c])
    return im.convert("RGB")


def _fabric(rng, w: int, h: int, colours: tuple[Colour, Colour], scale: float) -> Image.Image:
    """Clothes / object texture: plain (with folds), stripes or noise."""
    kind = rng.integers(3)
    if kind == 0:
        return _shaded(rng, w, h, colours[0], (scale, scale), 22)
    if kind == 1:
        period = max(3, round(scale * rng.uniform(0.15, 0.6)))
        return _striped(rng, w, h, colours, period)
    return _mottled(rng, w, h, [colours[0], colours[1], _scaled(colours[0], 0.7)], scale * 0.2)


# ---------------------------------------------------------------------------- backgrounds


def _bg_noise(rng, w: int, h: int, pal: list[Colour]) -> Image.Image:
    return _mottled(rng, w, h, pal[: int(rng.integers(2, 6))], min(w, h) * rng.uniform(0.03, 0.2))


def _bg_stripes(rng, w: int, h: int, pal: list[Colour]) -> Image.Image:
    period = int(rng.integers(4, max(6, min(w, h) // 8)))
    return _striped(rng, w, h, pal[: int(rng.integers(2, 4))], period)


def _bg_gradient(rng, w: int, h: int, pal: list[Colour]) -> Image.Image:
    if rng.random() < 0.7:
        ramp = Image.linear_gradient("L").rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR)
        ramp = ramp.crop((40, 40, 216, 216))  # the rotated square's corners are black
    else:
        ramp = Image.radial_gradient("L")
    ramp = ramp.resize((w, h), Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", (w, h), pal[0]), Image.new("RGB", (w, h), pal[1]), ramp)


def _bg_blobs(rng, w: int, h: int, pal: list[Colour]) -> Image.Image:
    small = Image.new("RGB", (max(2, w // 4), max(2, h // 4)), pal[0])
    _random_shapes(rng, ImageDraw.Draw(small), small.size, pal[1:], int(rng.integers(4, 12)))
    image = small.resize((w, h), Image.Resampling.BILINEAR)
    _random_shapes(rng, ImageDraw.Draw(image), (w, h), pal, int(rng.integers(0, 4)))  # sharp ones
    return image


def _random_shapes(rng, draw: ImageDraw.ImageDraw, wh, pal, n: int) -> None:
    w, h = wh
    for _ in range(n):
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        ax, ay = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
        colour = pal[rng.integers(len(pal))]
        if rng.random() < 0.7:
            _ellipse(draw, x, y, ax, ay, colour)
        else:
            draw.rectangle([x - ax, y - ay, x + ax, y + ay], fill=colour)


def _bg_indoor(rng, w: int, h: int, pal: list[Colour]) -> Image.Image:
    """A wall with a floor, windows, doors, pictures and furniture as rectangles."""
    image = _shaded(rng, w, h, pal[0], (w / 3, h / 3), 18)
    draw = ImageDraw.Draw(image)
    horizon = h * rng.uniform(0.55, 0.95)
    draw.rectangle([0, horizon, w, h], fill=pal[1])
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.8) * h
        x1, y1 = x0 + rng.uniform(0.08, 0.4) * w, y0 + rng.uniform(0.08, 0.5) * h
        kind = rng.random()
        if kind < 0.35:  # window: bright panes with a frame
            frame = max(2, round(min(w, h) * 0.012))
            draw.rectangle([x0, y0, x1, y1], fill=_jitter(rng, (225, 232, 240), 25),
                           outline=pal[2], width=frame)
            draw.line([((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1)], fill=pal[2], width=frame)
            draw.line([(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)], fill=pal[2], width=frame)
        else:  # furniture, door or picture
            draw.rectangle([x0, y0, x1, y1], fill=pal[int(rng.integers(2, len(pal)))])
    return image


_BACKGROUNDS: dict[str, Callable[..., Image.Image]] = {
    "noise": _bg_noise,
    "stripes": _bg_stripes,
    "gradient": _bg_gradient,
    "blobs": _bg_blobs,
    "indoor": _bg_indoor,
}


# ---------------------------------------------------------------------------- figure


# Hair outline ellipse per style, relative to the head: ranges of (centre raised by, in ry),
# (x semi-axis, in rx) and (y semi-axis, in ry).
_HAIR_EXTENT = {
    "short": (0.06, 0.14, 1.05, 1.15, 1.0, 1.08),
    "long": (0.02, 0.08, 1.12, 1.3, 1.05, 1.15),
    "curly": (0.05, 0.2, 1.3, 1.6, 1.15, 1.35),
    "bald": (0.0, 0.0, 1.0, 1.0, 1.0, 1.0),
}


def _sample_figure(rng: np.random.Generator, w: int, h: int, hair_type: str) -> _Figure:
    """Random position, scale and proportions of a person on a (w, h) canvas."""
    rx = min(w, h) * rng.uniform(0.08, 0.23)
    ry = rx * rng.uniform(1.18, 1.32)
    off_frame = rng.random() < 0.15
    cx = w * (rng.uniform(-0.05, 1.05) if off_frame else rng.uniform(0.2, 0.8))
    cy = h * (rng.uniform(-0.02, 0.2) if rng.random() < 0.1 else rng.uniform(0.22, 0.5))
    sy = cy + ry + rx * rng.uniform(0.25, 0.6)
    face = (
        cx,
        cy + ry * rng.uniform(0.06, 0.2),
        rx * rng.uniform(0.86, 0.93),
        ry * rng.uniform(0.88, 0.95),
    )
    style = hair_type if hair_type != "strands" else ("short", "long")[rng.integers(2)]
    extent = _HAIR_EXTENT[style]
    hair = (
        cy - ry * rng.uniform(extent[0], extent[1]),
        rx * rng.uniform(extent[2], extent[3]),
        ry * rng.uniform(extent[4], extent[5]),
    )
    return _Figure(
        cx=cx, cy=cy, rx=rx, ry=ry,
        bx=cx + rx * rng.uniform(-0.25, 0.25),
        sy=sy,
        sw=rx * rng.uniform(1.9, 2.6),
        hip_y=sy + rx * rng.uniform(4.3, 5.3),
        face=face, hair_type=hair_type, style=style, hair=hair,
        hair_len=rx * rng.uniform(1.0, 4.0),
    )


def _draw_person(rng: np.random.Generator, draw: ImageDraw.ImageDraw, fig: _Figure, *,
                 swing: tuple[float, float] = (0.0, 0.0)) -> None:
    """Draw the figure's labels, back to front.

    ``swing`` turns the (left, right) arm about its shoulder by that many degrees (positive: away
    from the body); it changes no random draw, so a clip can redraw one figure with moving arms.
    """
    back, front = _HAIR_STYLES[fig.style]
    back(rng, draw, fig)
    _draw_neck(draw, fig)
    _draw_torso(rng, draw, fig)
    for side, angle in zip((-1, 1), swing):
        _draw_arm(rng, draw, fig, side, swing=angle)
    _draw_head(draw, fig)
    front(rng, draw, fig)
    if fig.hair_type == "strands":
        _draw_strands(rng, draw, fig)


def _ellipse(draw: ImageDraw.ImageDraw, x: float, y: float, ax: float, ay: float, fill) -> None:
    draw.ellipse([x - abs(ax), y - abs(ay), x + abs(ax), y + abs(ay)], fill=fill)


def _limb(draw: ImageDraw.ImageDraw, points: list, width: float, fill: int) -> None:
    """A thick polyline with round joints and round ends."""
    width = max(1, round(width))
    draw.line(points, fill=fill, width=width, joint="curve")
    for x, y in (points[0], points[-1]):
        _ellipse(draw, x, y, width / 2, width / 2, fill)


def _polyline_prefix(points: list, fraction: float) -> list:
    """The first ``fraction`` (by length) of a polyline."""
    lengths = [math.dist(p, q) for p, q in zip(points, points[1:])]
    left = fraction * sum(lengths)
    out = [points[0]]
    for (p, q), seg in zip(zip(points, points[1:]), lengths):
        if seg >= left:
            t = left / seg if seg else 0.0
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
            return out
        out.append(q)
        left -= seg
    return out


def _draw_neck(draw: ImageDraw.ImageDraw, fig: _Figure) -> None:
    nw = fig.rx * 0.42
    top, bottom = fig.cy + 0.4 * fig.ry, fig.sy + 0.3 * fig.rx
    mid = (fig.cx + fig.bx) / 2
    draw.polygon([(fig.cx - nw, top), (fig.cx + nw, top), (mid + nw * 1.15, bottom),
                  (mid - nw * 1.15, bottom)], fill=BODY)


def _draw_torso(rng: np.random.Generator, draw: ImageDraw.ImageDraw, fig: _Figure) -> None:
    """Shoulders and torso (clothes), a neckline (body) and legs when the hips are visible."""
    bx, sy, sw, rx = fig.bx, fig.sy, fig.sw, fig.rx
    draw.polygon([(bx - sw * 0.55, sy - 0.2 * rx), (bx + sw * 0.55, sy - 0.2 * rx),
                  (bx + sw, sy + 0.5 * rx), (bx + sw * 0.9, fig.hip_y),
                  (bx - sw * 0.9, fig.hip_y), (bx - sw, sy + 0.5 * rx)], fill=CLOTHES)
    for side in (-1, 1):
        _ellipse(draw, bx + side * (sw - 0.5 * rx), sy + 0.5 * rx, 0.5 * rx, 0.7 * rx, CLOTHES)
    neckline = rng.integers(4)
    if neckline == 1:  # crew
        _ellipse(draw, bx, sy - 0.2 * rx, 0.45 * rx, 0.3 * rx, BODY)
    elif neckline == 2:  # v
        depth = rx * rng.uniform(0.8, 1.6)
        draw.polygon([(bx - 0.5 * rx, sy - 0.25 * rx), (bx + 0.5 * rx, sy - 0.25 * rx),
                      (bx, sy + depth)], fill=BODY)
    elif neckline == 3:  # scoop
        _ellipse(draw, bx, sy - 0.1 * rx, 0.8 * rx, 0.6 * rx, BODY)
    draw.rectangle([bx - sw * 0.9, fig.hip_y - 0.4 * rx, bx + sw * 0.9, fig.hip_y + 1.5 * rx],
                   fill=PANTS)
    for side in (-1, 1):
        x = bx + side * sw * 0.45
        spread = side * rx * rng.uniform(0.0, 0.6)
        _limb(draw, [(x, fig.hip_y - 0.5 * rx), (x + spread, fig.hip_y + 8 * rx)], sw * 0.8, PANTS)


def _draw_arm(rng: np.random.Generator, draw: ImageDraw.ImageDraw, fig: _Figure, side: int, *,
              swing: float = 0.0):
    """One arm (body) with a sleeve (clothes) and a hand; ``side`` is -1 (left) or 1.

    ``swing`` (degrees) turns the whole arm about the shoulder, away from the body when positive.
    """
    rx = fig.rx
    shoulder = (fig.bx + side * (fig.sw - 0.4 * rx), fig.sy + 0.45 * rx)
    a1 = math.radians(rng.uniform(4, 35)) + math.radians(swing)
    a2 = a1 + math.radians(rng.uniform(-80, 30))
    l1, l2 = rx * rng.uniform(2.4, 2.9), rx * rng.uniform(2.1, 2.5)
    elbow = (shoulder[0] + side * l1 * math.sin(a1), shoulder[1] + l1 * math.cos(a1))
    wrist = (elbow[0] + side * l2 * math.sin(a2), elbow[1] + l2 * math.cos(a2))
    hand = (wrist[0] + side * 0.3 * rx * math.sin(a2), wrist[1] + 0.3 * rx * math.cos(a2))
    width = rx * rng.uniform(0.6, 0.8)
    arm = [shoulder, elbow, wrist]
    _limb(draw, arm, width, BODY)
    _ellipse(draw, hand[0], hand[1], 0.32 * rx, 0.4 * rx, BODY)
    sleeve = rng.choice(3, p=(0.25, 0.35, 0.4))  # none, short, long
    if sleeve:
        fraction = rng.uniform(0.2, 0.45) if sleeve == 1 else rng.uniform(0.85, 0.97)
        _limb(draw, _polyline_prefix(arm, fraction), width * 1.2, CLOTHES)


def _draw_head(draw: ImageDraw.ImageDraw, fig: _Figure) -> None:
    for side in (-1, 1):
        _ellipse(draw, fig.cx + side * fig.rx * 0.97, fig.cy + 0.05 * fig.ry,
                 0.16 * fig.rx, 0.25 * fig.ry, SKIN)
    _ellipse(draw, fig.cx, fig.cy, fig.rx, fig.ry, SKIN)


# ---------------------------------------------------------------------------- hair


def _hair_box(fig: _Figure, grow: float = 1.0) -> list[float]:
    hcy, hx, hy = fig.hair
    return [fig.cx - hx * grow, hcy - hy * grow, fig.cx + hx * grow, hcy + hy * grow]


def _cap_and_face(rng: np.random.Generator, draw: ImageDraw.ImageDraw, fig: _Figure,
                  drop: tuple[float, float]) -> None:
    """Hair over the top of the head down to ``drop`` degrees below the ears, then the face."""
    a = rng.uniform(*drop)
    draw.chord(_hair_box(fig), 180 - a, 360 + a, fill=HAIR)
    _ellipse(draw, *fig.face, SKIN)


def _fringe(rng: np.random.Generator, draw: ImageDraw.ImageDraw, fig: _Figure) -> None:
    if rng.random() < 0.35:
        x = fig.cx + fig.rx * rng.uniform(-0.35, 0.35)
        y = fig.face[1] - fig.face[3]
        ax, ay = fig.rx * rng.uniform(0.6, 0.9), fig.ry * rng.uniform(0.25, 0.45)
        draw.chord([x - ax, y - ay, x + ax, y + ay], 0, 180, fill=HAIR)


def _no_hair(rng, draw, fig) -> None:
    """Nothing (bald, or short hair with nothing behind the head)."""


def _short_front(rng, draw, fig) -> None:
    _cap_and_face(rng, draw, fig, (0, 25))
    _fringe(rng, draw, fig)


def _long_back(rng, draw, fig) -> None:
    """Hair behind the head falling to the shoulders or lower."""
    hcy, hx, _ = fig.hair
    bottom = fig.cy + fig.ry + fig.hair_len
    draw.ellipse(_hair_box(fig), fill=HAIR)
    draw.polygon([(fig.cx - hx, hcy), (fig.cx + hx, hcy), (fig.cx + hx * 0.9, bottom),
                  (fig.cx - hx * 0.9, bottom)], fill=HAIR)
    _ellipse(draw, fig.cx, bottom, hx * 0.9, fig.rx * 0.5, HAIR)


def _long_front(rng, draw, fig) -> None:
    """Cap, face, optional fringe and locks falling in front of the shoulders."""
    _cap_and_face(rng, draw, fig, (20, 50))
    _fringe(rng, draw, fig)
    rx, top = fig.rx, fig.cy - 0.3 * fig.ry
    for side in (-1, 1):
        if rng.random() < 0.6:
            bottom = fig.cy + fig.ry + fig.hair_len * rng.uniform(0.5, 1.0)
            out = rng.uniform(1.3, 1.8)
            draw.polygon([(fig.cx + side * 0.86 * rx, top), (fig.cx + side * 1.2 * rx, top),
                          (fig.cx + side * out * rx, bottom),
                          (fig.cx + side * (out - 0.25) * rx, bottom + 0.4 * rx),
                          (fig.cx + side * 1.0 * rx, fig.cy + 0.8 * fig.ry)], fill=HAIR)


def _bumps(rng, draw, fig, box: list[float], angles: tuple[float, float], n: int, size: float):
    """Curls: ``n`` circles centred on the ellipse ``box`` between two angles (degrees)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ax, ay = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    for t in np.linspace(*angles, n) + rng.uniform(-3, 3, n):
        r = fig.rx * size * rng.uniform(0.6, 1.3)
        t = math.radians(t)
        _ellipse(draw, cx + ax * math.cos(t), cy + ay * math.sin(t), r, r, HAIR)


def _curly_back(rng, draw, fig) -> None:
    """A big bumpy volume of hair around the head."""
    draw.ellipse(_hair_box(fig), fill=HAIR)
    _bumps(rng, draw, fig, _hair_box(fig, 0.97), (125, 415), int(rng.integers(18, 30)), 0.22)


def _curly_front(rng, draw, fig) -> None:
    """Cap, face and small curls along the hairline."""
    _cap_and_face(rng, draw, fig, (10, 35))
    fx, fy, fax, fay = fig.face
    _bumps(rng, draw, fig, [fx - fax, fy - fay, fx + fax, fy + fay], (205, 335),
           int(rng.integers(5, 10)), 0.12)


_HAIR_STYLES = {
    "short": (_no_hair, _short_front),
    "long": (_long_back, _long_front),
    "curly": (_curly_back, _curly_front),
    "bald": (_no_hair, _no_hair),
}


def _draw_strands(rng: np.random.Generator, draw: ImageDraw.ImageDraw, fig: _Figure) -> None:
    """Thin (1-2 px at output size) curved strands flying out of the hair outline."""
    hcy, hx, hy = fig.hair
    for _ in range(int(rng.integers(18, 50))):
        theta = rng.uniform(-1.1 * math.pi, 0.1 * math.pi)  # around the top (y grows down)
        r0 = rng.uniform(0.8, 0.97)
        x, y = fig.cx + hx * r0 * math.cos(theta), hcy + hy * r0 * math.sin(theta)
        heading, bend = theta + rng.uniform(-0.7, 0.7), rng.uniform(-0.4, 0.4)
        step = fig.rx * rng.uniform(0.35, 1.4) / 5
        points = [(x, y)]
        for _ in range(5):
            heading += bend
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
            points.append((x, y))
        draw.line(points, fill=HAIR, width=int(rng.choice((2, 2, 3, 4))), joint="curve")


def _draw_occluder(rng: np.random.Generator, draw: ImageDraw.ImageDraw, canvas_wh,
                   person_box) -> None:
    """A rectangle or ellipse in front of the person (background in the mask)."""
    if person_box is None:
        return
    x0, y0, x1, y1 = person_box
    x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
    w, h = canvas_wh
    ax, ay = rng.uniform(0.08, 0.25) * w, rng.uniform(0.05, 0.2) * h
    if rng.random() < 0.5:
        draw.rectangle([x - ax, y - ay, x + ax, y + ay], fill=OCCLUDER)
    else:
        _ellipse(draw, x, y, ax, ay, OCCLUDER)


# ---------------------------------------------------------------------------- painting


def _paint_labels(rng, image: Image.Image, labels: Image.Image, look: _Look, fig) -> None:
    """Paste a texture over each label's pixels of ``image`` (in place)."""
    scale = fig.rx if fig is not None else min(image.size) * 0.1
    painters = _label_painters(rng, look, scale)
    region = labels.getbbox()
    if region is None:
        return
    crop = labels.crop(region)
    present = crop.histogram()
    for label in _PASTE_ORDER:
        if not present[label]:
            continue
        mask = crop.point(_ONLY[label])
        x0, y0, x1, y1 = mask.getbbox()
        box = (region[0] + x0, region[1] + y0, region[0] + x1, region[1] + y1)
        image.paste(painters[label](x1 - x0, y1 - y0), box, mask.crop((x0, y0, x1, y1)))
        if label == SKIN:
            _draw_face_features(ImageDraw.Draw(image), fig, look)


def _label_painters(rng, look: _Look, scale: float) -> dict[int, Callable[[int, int], Image.Image]]:
    """Canvas label -> ``painter(w, h)`` giving that label's texture (draws from ``rng`` when called)."""
    return {
        SKIN: lambda w, h: _shaded(rng, w, h, look.skin, (scale, scale), 12),
        BODY: lambda w, h: _shaded(rng, w, h, look.body, (scale, scale), 14),
        HAIR: lambda w, h: _hair_texture(rng, w, h, look.hair, scale),
        CLOTHES: lambda w, h: _fabric(rng, w, h, look.clothes, scale),
        PANTS: lambda w, h: _shaded(rng, w, h, look.pants, (scale, scale), 20),
        OCCLUDER: lambda w, h: _fabric(rng, w, h, (_random_colour(rng), _random_colour(rng)),
                                       scale),
    }


def _hair_texture(rng, w: int, h: int, colour: Colour, scale: float) -> Image.Image:
    """Hair colour with thin streaks along y and a soft highlight near the top."""
    cell_w, cell_h = max(1.5, scale * 0.06), scale * 0.7
    gh, gw = max(2, round(h / cell_h) + 1), max(2, round(w / cell_w) + 1)
    ys = np.linspace(-1.0, 1.0, gh)[:, None, None]
    xs = np.linspace(-1.0, 1.0, gw)[None, :, None]
    highlight = 40 * np.clip(1.0 - (xs * xs + (ys + 0.4) ** 2), 0.0, 1.0)
    grid = np.asarray(colour, dtype=np.float64) + highlight + rng.uniform(-30, 30, (gh, gw, 1))
    return _upsampled(grid, w, h)


def _draw_face_features(draw: ImageDraw.ImageDraw, fig: _Figure, look: _Look) -> None:
    """Eyes, brows, nose and mouth; drawn right after the skin is pasted, so hair and
    occluders pasted later cover them."""
    fx, fy, fax, fay = fig.face
    if fax < 5:
        return
    dark = _scaled(look.skin, 0.55)
    eye_y = fy - 0.05 * fay
    for side in (-1, 1):
        ex = fx + side * 0.38 * fax
        _ellipse(draw, ex, eye_y, 0.17 * fax, 0.08 * fay, (235, 232, 228))
        _ellipse(draw, ex, eye_y, 0.08 * fax, 0.08 * fay, _scaled(look.hair, 0.5))
        draw.line([(ex - 0.2 * fax, eye_y - 0.2 * fay), (ex + 0.2 * fax, eye_y - 0.22 * fay)],
                  fill=look.hair, width=max(1, round(0.05 * fay)))
    draw.line([(fx, eye_y + 0.1 * fay), (fx + 0.05 * fax, eye_y + 0.35 * fay)], fill=dark,
              width=max(1, round(0.03 * fay)))
    mouth = tuple((s + r) // 2 for s, r in zip(_scaled(look.skin, 0.75), (170, 60, 70)))
    _ellipse(draw, fx, fy + 0.55 * fay, 0.28 * fax, 0.06 * fay, mouth)


# ---------------------------------------------------------------------------- lighting


def _curve(gains: Sequence[float], gamma: float, offset: float) -> list[int]:
    """A 3-channel point() lookup table: gain * 255 * (v / 255) ** gamma + offset."""
    base = np.array([255 * (v / 255) ** gamma for v in range(256)])  # scalar pow: portable
    table = np.asarray(gains, dtype=np.float64)[:, None] * base + offset
    return np.clip(np.rint(table), 0, 255).astype(np.uint8).ravel().tolist()


@dataclass(frozen=True)
class _Lighting:
    """One scene's lighting: point() curves and the sensor noise level."""

    curves: tuple[list[int], ...]  # one curve, or (dark, lit) for a backlit scene (person, rest)
    noise_shift: int  # noise of +-(128 >> noise_shift) levels


def _apply_lighting(rng, image: Image.Image, labels: Image.Image, kind: str) -> np.ndarray:
    """Global lighting (per-channel curves), backlight and mild sensor noise -> uint8 array."""
    lighting = _sample_lighting(rng, kind)
    return _add_noise(rng, _light(image, labels, lighting.curves), lighting.noise_shift)


def _sample_lighting(rng, kind: str) -> _Lighting:
    """The curves and noise level of a ``kind`` of lighting (LIGHTINGS)."""
    gain = rng.uniform(0.9, 1.1)
    if kind == "dim":
        curves = (_curve([rng.uniform(0.45, 0.7)] * 3, rng.uniform(1.1, 1.5), 0),)
    elif kind == "bright":
        curves = (_curve([rng.uniform(1.1, 1.35)] * 3, rng.uniform(0.7, 0.9), 15),)
    elif kind == "colored":
        cast = rng.uniform(0.7, 1.25, 3)
        curves = (_curve(list(cast / cast.mean() * gain), 1.0, 0),)
    elif kind == "backlit":
        lit = _curve([rng.uniform(1.2, 1.5)] * 3, 0.8, rng.uniform(20, 50))
        curves = (_curve([rng.uniform(0.35, 0.6)] * 3, 1.1, 0), lit)
    else:
        curves = (_curve([gain] * 3, 1.0, 0),)
    return _Lighting(curves=curves, noise_shift=int(rng.integers(4, 7)))  # noise +-8, +-4 or +-2


def _light(image: Image.Image, labels: Image.Image, curves: tuple[list[int], ...]) -> Image.Image:
    """``image`` through the lighting curves; with two (dark, lit), the person (and occluders:
    non-background pixels of the 2x ``labels``) get the dark one."""
    if len(curves) == 1:
        return image.point(curves[0])
    dark, lit = curves
    return Image.composite(image.point(dark), image.point(lit), labels.point(_NOT_BG).reduce(2))


def _add_noise(rng, image: Image.Image, shift: int) -> np.ndarray:
    """Uniform sensor noise of +-(128 >> shift) levels -> uint8 array."""
    noise = np.frombuffer(rng.bytes(image.height * image.width * 3), dtype=np.uint8) >> shift
    noisy = np.asarray(image, dtype=np.int16) + noise.reshape(image.height, image.width, 3)
    noisy -= 128 >> shift
    return np.clip(noisy, 0, 255).astype(np.uint8)
