"""Synthetic portrait video clips with per-frame ground truth, and clip datasets (layer 1).

A clip is one synthetic scene built from ``synth.py``'s pieces (background, person, textures,
lighting, the 2x canvas) and animated over its frames with smooth trajectories: sums of a few
low-frequency sinusoids with random phases. The subject shifts, tilts and zooms a little about its
neck and swings its arms; the camera shakes (a moving crop of a larger background); the lighting
flickers (a per-frame gain). Textures are made once per clip, so they stick to the scene; only the
sensor noise is new in every frame. Each frame's mask comes from that frame's label canvas exactly
as in ``synth.render`` (``_downsample_mask``), so it matches what is drawn. Every clip has a person.

Everything random comes from ``np.random.default_rng(seed)``: the scene, then the motion, then
each frame's noise in order, so a longer clip of the same seed starts with the shorter one's frames.

A clip dataset is a folder of clips, each an ordinary edgeseg dataset folder::

    ROOT/classes.txt                  one class per line, background first
    ROOT/<clip>/images/<frame>.png    frames in file-name order
    ROOT/<clip>/masks/<frame>.png     mode L class index, one per frame
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgeseg.data import synth
from edgeseg.data.datasets import FileSource, _folder_pairs, check_data_classes, read_classes
from edgeseg.data.synth import BG, OCCLUDER, Sample
from edgeseg.errors import DataError
from edgeseg.fsutil import check_output, install_staged, staging_dir

CLIPS_MARKER = ".edgeseg-synth-clips.json"  # says a folder was written by write_clips (so it may replace it)
MIN_FRAMES = 2

# Motion: amplitude and (shortest, longest) period in frames of each trajectory. Lengths are
# fractions of the shorter image side; each clip scales its amplitudes by 0.5-1.
_SHIFT = (0.06, 0.03)  # subject translation, x and y
_SHIFT_PERIODS = (20.0, 60.0)
_TILT = 4.0  # subject rotation about the neck, degrees
_TILT_PERIODS = (25.0, 70.0)
_ZOOM = 0.07  # subject scale about the neck, +- fraction
_ZOOM_PERIODS = (30.0, 90.0)
_SWING = 15.0  # each arm about its shoulder, degrees
_SWING_PERIODS = (16.0, 48.0)
_SHAKE = 0.008  # camera jitter, x and y
_SHAKE_PERIODS = (5.0, 14.0)
_FLICKER = 0.03  # global light gain, +- fraction
_FLICKER_PERIODS = (3.0, 10.0)

_PERSON_LABELS = (synth.SKIN, synth.HAIR, synth.BODY, synth.CLOTHES, synth.PANTS)  # paste order


@dataclass(frozen=True)
class Clip:
    """One clip of a clip dataset: its folder name and its frames (with masks) in file-name order."""

    name: str
    source: FileSource


# ---------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class _Wave:
    """A smooth trajectory: a weighted sum of sinusoids, never beyond +-amplitude."""

    amplitude: float
    freqs: tuple[float, ...]  # cycles per frame
    phases: tuple[float, ...]
    weights: tuple[float, ...]  # sum to 1

    def at(self, t: int) -> float:
        return self.amplitude * sum(w * math.sin(2 * math.pi * f * t + p)
                                    for w, f, p in zip(self.weights, self.freqs, self.phases))


def _wave(rng: np.random.Generator, amplitude: float, periods: tuple[float, float], n: int = 3) -> _Wave:
    """A random ``_Wave`` of ``n`` sinusoids with periods in ``periods`` frames."""
    weights = rng.uniform(0.2, 1.0, n)
    return _Wave(
        amplitude=amplitude * float(rng.uniform(0.5, 1.0)),
        freqs=tuple(float(1 / p) for p in rng.uniform(*periods, n)),
        phases=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, n)),
        weights=tuple(float(w) for w in weights / weights.sum()),
    )


@dataclass(frozen=True)
class _Pose:
    """Where everything is in one frame (canvas pixels, degrees)."""

    shift: tuple[float, float]  # subject translation
    tilt: float
    zoom: float  # subject scale, about 1
    swing: tuple[float, float]  # left, right arm
    camera: tuple[int, int]  # the frame shows the scene from here (offset of the crop window)
    gain: float  # light, about 1


@dataclass(frozen=True)
class _Motion:
    """The trajectories of one clip."""

    shift: tuple[_Wave, _Wave]
    tilt: _Wave
    zoom: _Wave
    swing: tuple[_Wave, _Wave]
    shake: tuple[_Wave, _Wave]
    flicker: _Wave

    def pose(self, t: int) -> _Pose:
        """The pose of frame ``t``."""
        return _Pose(
            shift=(self.shift[0].at(t), self.shift[1].at(t)),
            tilt=self.tilt.at(t),
            zoom=1.0 + self.zoom.at(t),
            swing=(self.swing[0].at(t), self.swing[1].at(t)),
            camera=(round(self.shake[0].at(t)), round(self.shake[1].at(t))),
            gain=1.0 + self.flicker.at(t),
        )


def _sample_motion(rng: np.random.Generator, side: int) -> _Motion:
    """Random trajectories for a clip drawn on a canvas whose shorter side is ``side`` pixels."""
    return _Motion(
        shift=(_wave(rng, _SHIFT[0] * side, _SHIFT_PERIODS), _wave(rng, _SHIFT[1] * side, _SHIFT_PERIODS)),
        tilt=_wave(rng, _TILT, _TILT_PERIODS),
        zoom=_wave(rng, _ZOOM, _ZOOM_PERIODS),
        swing=(_wave(rng, _SWING, _SWING_PERIODS), _wave(rng, _SWING, _SWING_PERIODS)),
        shake=(_wave(rng, _SHAKE * side, _SHAKE_PERIODS), _wave(rng, _SHAKE * side, _SHAKE_PERIODS)),
        flicker=_wave(rng, _FLICKER, _FLICKER_PERIODS),
    )


def _camera_margin(side: int) -> int:
    """How far (canvas pixels) the camera can move: the background is drawn this much larger on each side."""
    return math.ceil(_SHAKE * side) + 1


def _person_pad(w2: int, h2: int) -> int:
    """Margin of the person canvas beyond the frame canvas.

    Larger than any distance between a frame pixel and the person-canvas pixel it shows (shift,
    shake, tilt and zoom about a pivot on or just off the canvas), so the places where the figure
    is cut off (its legs run off the canvas) never come into view.
    """
    side = min(w2, h2)
    zoom_min = 1 - _ZOOM
    reach = 1.1 * math.hypot(w2, h2)  # pivot to the farthest frame corner
    moved = (math.hypot(*_SHIFT) + math.sqrt(2) * _SHAKE) * side + 2
    turned = (1 / zoom_min - 1) + math.radians(_TILT) / zoom_min
    return math.ceil(moved / zoom_min + reach * turned) + 2


# ---------------------------------------------------------------------------- scene


@dataclass(frozen=True, eq=False)
class _Scene:
    """Everything of a clip that does not change from frame to frame."""

    size: tuple[int, int]  # frame canvas (w2, h2): twice the output size
    margin: int  # camera margin: the background is (w2 + 2 margin, h2 + 2 margin)
    background: Image.Image
    occluder: tuple[Image.Image, Image.Image] | None  # (texture, 0/255 mask) on the background's canvas
    pad: int  # the person canvas is the frame canvas plus ``pad`` on each side
    fig: synth._Figure  # on the person canvas
    person_seed: int  # the random draws of the figure's drawing, repeated in every frame
    pivot: tuple[float, float]  # neck, frame canvas coordinates
    look: synth._Look
    textures: dict[int, Image.Image]  # label -> RGB texture of the whole person canvas
    lighting: synth._Lighting
    attrs: dict


def _build_scene(rng: np.random.Generator, width: int, height: int) -> _Scene:
    """Draw the parts of a clip that stay: colours, background, figure, textures, occluder, lighting."""
    w2, h2 = 2 * width, 2 * height
    tone = synth.SKIN_TONES[rng.integers(len(synth.SKIN_TONES))]
    hair_type = synth.HAIR_TYPES[rng.choice(len(synth.HAIR_TYPES), p=synth.HAIR_TYPE_WEIGHTS)]
    look = synth._sample_look(rng, tone)
    bg_kind = synth.BACKGROUNDS[rng.integers(len(synth.BACKGROUNDS))]
    lighting = synth.LIGHTINGS[rng.choice(len(synth.LIGHTINGS), p=synth.LIGHTING_WEIGHTS)]
    margin = _camera_margin(min(w2, h2))
    background = synth._BACKGROUNDS[bg_kind](rng, w2 + 2 * margin, h2 + 2 * margin, synth._palette(rng, 6, look))
    fig = synth._sample_figure(rng, w2, h2, hair_type)
    pad = _person_pad(w2, h2)
    person_fig = _shifted(fig, pad)
    person_seed = int(rng.integers(2**63))
    base = _person_labels(person_fig, person_seed, (w2 + 2 * pad, h2 + 2 * pad), (0.0, 0.0))
    textures = _person_textures(rng, base, look, fig.rx)
    occluder = None
    if rng.random() < synth.OCCLUSION_RATE:
        occluder = _sample_occluder(rng, base, pad, margin, (w2, h2), look, fig.rx)
    return _Scene(
        size=(w2, h2), margin=margin, background=background, occluder=occluder, pad=pad,
        fig=person_fig, person_seed=person_seed, pivot=(fig.bx, fig.sy), look=look,
        textures=textures, lighting=synth._sample_lighting(rng, lighting),
        attrs={"skin_tone": tone, "lighting": lighting, "hair_type": hair_type, "background": bg_kind},
    )


def _shifted(fig: synth._Figure, d: float) -> synth._Figure:
    """``fig`` moved by ``d`` pixels right and down."""
    fx, fy, fax, fay = fig.face
    hcy, hx, hy = fig.hair
    return dataclasses.replace(fig, cx=fig.cx + d, cy=fig.cy + d, bx=fig.bx + d, sy=fig.sy + d,
                               hip_y=fig.hip_y + d, face=(fx + d, fy + d, fax, fay), hair=(hcy + d, hx, hy))


def _person_labels(fig: synth._Figure, seed: int, size: tuple[int, int], swing: tuple[float, float]) -> Image.Image:
    """The figure's label canvas (mode L) with its arms swung by ``swing`` degrees."""
    labels = Image.new("L", size, BG)
    synth._draw_person(np.random.default_rng(seed), ImageDraw.Draw(labels), fig, swing=swing)
    return labels


def _person_textures(rng: np.random.Generator, base: Image.Image, look: synth._Look, scale: float) -> dict:
    """Label -> RGB texture covering the whole person canvas, made once per clip.

    Each label's texture (synth's painters) covers its box in the unswung pose grown by two head
    widths (the arms swing); beyond that it is the label's plain colour.
    """
    painters = synth._label_painters(rng, look, scale)
    plain = {synth.SKIN: look.skin, synth.HAIR: look.hair, synth.BODY: look.body,
             synth.CLOTHES: look.clothes[0], synth.PANTS: look.pants}
    grow = round(2 * scale)
    textures = {}
    for label in _PERSON_LABELS:
        texture = Image.new("RGB", base.size, plain[label])
        box = base.point(synth._ONLY[label]).getbbox()
        if box is not None:
            x0, y0 = max(0, box[0] - grow), max(0, box[1] - grow)
            x1, y1 = min(base.width, box[2] + grow), min(base.height, box[3] + grow)
            texture.paste(painters[label](x1 - x0, y1 - y0), (x0, y0))
        textures[label] = texture
    return textures


def _sample_occluder(rng: np.random.Generator, base: Image.Image, pad: int, margin: int,
                     frame: tuple[int, int], look: synth._Look, scale: float):
    """An object standing in front of the person, still in the scene: (texture, mask) on the
    background's canvas, or None when the person is not in the frame."""
    w2, h2 = frame
    box = base.getbbox()
    if box is None:
        return None
    x0, y0 = max(box[0] - pad, 0), max(box[1] - pad, 0)  # the person's box within the frame
    x1, y1 = min(box[2] - pad, w2), min(box[3] - pad, h2)
    if x0 >= x1 or y0 >= y1:
        return None
    size = (w2 + 2 * margin, h2 + 2 * margin)
    mask = Image.new("L", size, 0)
    person_box = (x0 + margin, y0 + margin, x1 + margin, y1 + margin)
    synth._draw_occluder(rng, ImageDraw.Draw(mask), frame, person_box)
    mask = mask.point(synth._ONLY[OCCLUDER])
    texture = Image.new("RGB", size)
    drawn = mask.getbbox()
    if drawn is not None:
        paint = synth._label_painters(rng, look, scale)[OCCLUDER]
        texture.paste(paint(drawn[2] - drawn[0], drawn[3] - drawn[1]), drawn[:2])
    return texture, mask


# ---------------------------------------------------------------------------- frames


def _paint_person(scene: _Scene, labels: Image.Image) -> Image.Image:
    """The person's RGB on the person canvas: each label's fixed texture through that label's pixels."""
    rgb = Image.new("RGB", labels.size)
    region = labels.getbbox()
    if region is None:
        return rgb
    crop = labels.crop(region)
    present = crop.histogram()
    for label in _PERSON_LABELS:
        if present[label]:
            rgb.paste(scene.textures[label].crop(region), region, crop.point(synth._ONLY[label]))
        if label == synth.SKIN:
            synth._draw_face_features(ImageDraw.Draw(rgb), scene.fig, scene.look)
    return rgb


def _person_transform(scene: _Scene, pose: _Pose) -> tuple[float, ...]:
    """Image.transform AFFINE data: frame canvas pixel -> person canvas pixel.

    The subject is shifted, tilted and zoomed about its neck (the pivot), and seen from the
    camera's position: frame pixel f shows the scene at f + camera.
    """
    angle = math.radians(pose.tilt)
    cos, sin = math.cos(angle) / pose.zoom, math.sin(angle) / pose.zoom
    px, py = scene.pivot
    ux = pose.camera[0] - pose.shift[0] - px
    uy = pose.camera[1] - pose.shift[1] - py
    return (cos, sin, scene.pad + px + cos * ux + sin * uy,
            -sin, cos, scene.pad + py - sin * ux + cos * uy)


def _compose_frame(scene: _Scene, pose: _Pose) -> tuple[Image.Image, Image.Image]:
    """The 2x RGB frame and its label canvas (the person moved into place, the occluder over it)."""
    person_size = (scene.size[0] + 2 * scene.pad, scene.size[1] + 2 * scene.pad)
    labels = _person_labels(scene.fig, scene.person_seed, person_size, pose.swing)
    person = _paint_person(scene, labels)
    person.putalpha(labels)  # one transform moves colours and labels alike
    moved = person.transform(scene.size, Image.Transform.AFFINE, _person_transform(scene, pose),
                             resample=Image.Resampling.NEAREST)
    frame_labels = moved.getchannel("A")
    m = scene.margin
    window = (m + pose.camera[0], m + pose.camera[1], m + pose.camera[0] + scene.size[0],
              m + pose.camera[1] + scene.size[1])
    frame = scene.background.crop(window)
    frame.paste(moved, (0, 0), frame_labels.point(synth._NOT_BG))
    if scene.occluder is not None:
        texture, mask = (im.crop(window) for im in scene.occluder)
        frame.paste(texture, (0, 0), mask)
        frame_labels.paste(OCCLUDER, (0, 0, *scene.size), mask)
    return frame, frame_labels


def _gained(curve: list[int], gain: float) -> list[int]:
    """A point() curve with its output multiplied by ``gain``."""
    return np.clip(np.rint(np.asarray(curve, dtype=np.float64) * gain), 0, 255).astype(np.uint8).tolist()


def _render_frame(rng: np.random.Generator, scene: _Scene, pose: _Pose, parts: bool) -> Sample:
    """One frame: composed at 2x, box-downsampled, lit (with this frame's flicker) and noised."""
    frame, labels = _compose_frame(scene, pose)
    curves = tuple(_gained(c, pose.gain) for c in scene.lighting.curves)
    image = synth._add_noise(rng, synth._light(frame.reduce(2), labels, curves), scene.lighting.noise_shift)
    return Sample(image=image, mask=synth._downsample_mask(labels, parts), attrs=dict(scene.attrs))


def render_clip(task: str, size, frames: int, seed: int) -> list[Sample]:
    """Render one synthetic clip of ``frames`` frames; the same arguments give bit-identical frames.

    ``task`` is "portrait" or "parts" (``synth.TASKS``); ``size`` is ``(height, width)`` or an int;
    ``frames`` >= 2; ``seed`` a non-negative int. The frames of both tasks are the same images, and
    the portrait masks equal ``parts masks > 0``. ``attrs`` (the slice attributes) are the clip's.
    """
    classes = synth._task_classes(task)
    height, width = synth._parse_size(size)
    frames = _parse_frames(frames)
    rng = np.random.default_rng(synth._parse_seed(seed))
    scene = _build_scene(rng, width, height)
    motion = _sample_motion(rng, min(scene.size))
    parts = classes == synth.PARTS_CLASSES
    return [_render_frame(rng, scene, motion.pose(t), parts) for t in range(frames)]


# ---------------------------------------------------------------------------- writing


def write_clips(out: str | Path, task: str, clips: int, frames: int, size, seed: int) -> Path:
    """Write ``clips`` synthetic clips of ``frames`` frames to ``out`` atomically and return ``out``.

    ``out`` may be new, empty, or a folder this function wrote before (it is replaced); any other
    non-empty folder is refused (DataError), so a user's files are never touched. Layout:
    ``classes.txt``, the marker ``.edgeseg-synth-clips.json`` and ``clip_000/images/frame_0000.png``
    (RGB) + ``clip_000/masks/frame_0000.png`` (mode L class index), ...; clip ``k`` is
    ``render_clip(task, size, frames, synth.sample_seed(seed, k))``. Arguments are checked first.
    """
    classes = synth._task_classes(task)
    clips = synth._parse_int(clips, "clip count", 1)
    frames = _parse_frames(frames)
    synth._parse_size(size)
    synth._parse_seed(seed)
    out = check_output(out, is_dir=True, what="output folder")
    _check_target(out)
    owned = _owned_names(out)
    tmp = staging_dir(out)
    try:
        (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        for k in range(clips):
            samples = render_clip(task, size, frames, synth.sample_seed(seed, k))
            _write_frames(tmp / _clip_name(k, clips), samples)
        marker = {"task": task, "clips": clips, "frames": frames, "size": size, "seed": seed,
                  "sha256": synth.file_digests(tmp)}
        (tmp / CLIPS_MARKER).write_text(json.dumps(marker) + "\n")
        install_staged(tmp, out, owned=owned, last=CLIPS_MARKER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_target(out: Path) -> None:
    """Refuse a non-empty folder unless an earlier write_clips made it and it holds only what that run wrote."""
    if (out / synth.SYNTH_MARKER).is_file() and not (out / CLIPS_MARKER).is_file():
        raise DataError(f"{out} holds a synthetic image set (from 'edgeseg data synth' without --clips), "
                        "not clips; choose an empty or new folder")
    synth._check_synth_target(out, _files_written, CLIPS_MARKER)


def _clip_name(k: int, clips: int) -> str:
    return f"clip_{k:0{max(3, len(str(clips - 1)))}d}"


def _frame_name(t: int, frames: int) -> str:
    return f"frame_{t:0{max(4, len(str(frames - 1)))}d}"


def _write_frames(folder: Path, samples: list[Sample]) -> None:
    """One clip as ``folder/images/*.png`` (RGB) and ``folder/masks/*.png`` (mode L)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for t, sample in enumerate(samples):
        name = f"{_frame_name(t, len(samples))}.png"
        Image.fromarray(sample.image, "RGB").save(folder / "images" / name, compress_level=1)
        Image.fromarray(sample.mask, "L").save(folder / "masks" / name, compress_level=1)


def _recorded(out: Path) -> tuple[int, int] | None:
    """(clips, frames) that the marker of an earlier ``write_clips`` in ``out`` records, or None."""
    try:
        marker = json.loads((out / CLIPS_MARKER).read_text())
        clips, frames = marker["clips"], marker["frames"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    valid = all(type(v) is int for v in (clips, frames)) and clips >= 1 and frames >= MIN_FRAMES
    return (clips, frames) if valid and clips * frames <= 10**7 else None


def _files_written(out: Path) -> set[str]:
    """Every path (relative, folders included) that the write_clips run recorded in ``out``'s marker wrote."""
    recorded = _recorded(out)
    if recorded is None:
        return set()
    clips, frames = recorded
    paths = {"classes.txt", CLIPS_MARKER}
    for k in range(clips):
        clip = _clip_name(k, clips)
        paths |= {clip, f"{clip}/images", f"{clip}/masks"}
        paths |= {f"{clip}/{sub}/{_frame_name(t, frames)}.png" for sub in ("images", "masks") for t in range(frames)}
    return paths


def _owned_names(out: Path) -> set[str]:
    """Top-level names of ``out`` that an earlier write_clips wrote (removed unless written again)."""
    recorded = _recorded(out)
    clips = {_clip_name(k, recorded[0]) for k in range(recorded[0])} if recorded else set()
    return clips | {"classes.txt", CLIPS_MARKER}


def _parse_frames(frames) -> int:
    try:
        value = synth._parse_int(frames, "frames", MIN_FRAMES)
    except DataError:
        raise DataError(f"synthetic clip frames {frames!r}: expected an int >= {MIN_FRAMES}") from None
    return value


# ---------------------------------------------------------------------------- reading


def _clip_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` holding an images/ folder, by name (hidden ones, e.g. staging, skipped)."""
    return sorted((p for p in root.iterdir() if not p.name.startswith(".") and (p / "images").is_dir()),
                  key=lambda p: p.name)


SPLIT_FOLDERS = ("train", "val", "test")  # a dataset's split folders, never clips


def is_clip_dataset(root: str | Path) -> bool:
    """True when ``root`` is a folder with no images/ of its own and at least one sub-folder holding images/,
    none of them named like a split (``train``, ``val``, ``test``: that is a dataset with split folders)."""
    root = Path(root)
    try:
        folders = _clip_folders(root) if root.is_dir() and not (root / "images").is_dir() else []
        return bool(folders) and not any(f.name in SPLIT_FOLDERS for f in folders)
    except OSError:
        return False


def open_clips(root: str | Path, classes: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], list[Clip]]:
    """The classes and the clips (sorted by name) of a clip dataset folder.

    Classes come from ``classes`` (a model's, as every caller gives) when given, else ``root/classes.txt``;
    both given and different is a DataError naming both. Every clip must have a mask for each frame and at least 2 frames.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"clip dataset folder not found: {root}")
    if not is_clip_dataset(root):
        raise DataError(f"{root}: not a clip dataset (expected one folder per clip holding images/ + masks/, "
                        "e.g. from 'edgeseg data synth DIR --clips N')")
    names = _clip_classes(root, classes)
    return names, [Clip(folder.name, _clip_source(folder, names)) for folder in _clip_folders(root)]


def _clip_classes(root: Path, classes: tuple[str, ...] | None) -> tuple[str, ...]:
    if classes is not None:
        check_data_classes(root, classes, "the model")
    names = classes or read_classes(root)
    if names is None:
        raise DataError(f"{root}: no classes.txt; add one (one class name per line, background first) "
                        "or give the class names")
    return tuple(names)


def _clip_source(folder: Path, classes: tuple[str, ...]) -> FileSource:
    """A clip folder's frames (file-name order) with their masks; DataError naming the clip and the fix."""
    try:
        pairs = _folder_pairs(folder, need_masks=True)
    except DataError as exc:
        raise DataError(f"clip '{folder.name}': {exc}; every frame in images/ needs a mask of the same name "
                        "in masks/ (and every mask a frame)") from None
    if len(pairs) < MIN_FRAMES:
        found = "no frames" if not pairs else "only 1 frame"
        raise DataError(f"clip '{folder.name}' ({folder}) has {found}; a clip needs at least {MIN_FRAMES} "
                        "frames: add frames or remove the folder")
    return FileSource(pairs, classes)
