"""``edgeseg predict``: run any model on images of any size and write masks or composites (layer 3).

Each image is resized to the model input, the logits are mapped back to the original size
(bilinear), and the foreground matte is ``1 - P(background)``. A bad image (unreadable, or over
Pillow's pixel limit) is reported and skipped; the rest are still processed.

Ownership: edgeseg only replaces what it wrote. ``plan_predict`` decides every output name and
refuses, before the model is loaded or any image is read, a plan that would write two inputs to
one name, write over an input, or replace a file that edgeseg did not write. What it wrote is
recorded in a ledger in the output folder (``LEDGER_NAME``: name -> sha256 of the bytes written),
so a re-run into the same folder replaces its own earlier outputs, and only those. Outputs never go
among the inputs: an ``--out`` that is an input folder or lies inside one is refused.

Crash safety: each file is written in a staging folder inside its destination folder (``fsutil.staging_dir``:
its name carries this process id, so the next run into that folder removes what a killed run left) and
renamed into place after the ledger lists it; a folder this run created is removed again if it is left
empty (every input failed, or the disk filled up). A file being replaced is listed with both sha256s, the
bytes it held and the new ones (``[old, new]``), so a run killed between the ledger's update and the
renames leaves a folder the next run still recognises as its own.

Memory: full-resolution results are built a band of rows at a time (``compose.row_bands``), so a
photo needs a few tens of bytes per pixel whatever its size and output mode.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeseg.apply import compose
from edgeseg.apply.refine import refine_alpha
from edgeseg.apply.video import (OUTPUT_SUFFIX, VIDEO_SUFFIXES, VideoInfo, is_video, probe_video, read_frames,
                                 video_writer)
from edgeseg.data.images import IMAGE_SUFFIXES, in_profile, read_image
from edgeseg.data.transforms import resize_pixels
from edgeseg.errors import DataError, EdgesegError
from edgeseg.fsutil import check_output, folder_lock, is_inside, is_staging, sha256_file, staging_dir
from edgeseg.bench.gate import parity_problem
from edgeseg.runtime.loader import LoadedModel, load_model
from edgeseg.runtime.stabilizer import SmoothCfg, frame_run, softmax

OUTPUTS = ("mask", "alpha", "cutout", "blur", "replace", "overlay")
#: The outputs that show the photo's own pixels: written with the photo's colour profile (ICC), if it has one.
#: ``mask`` and ``alpha`` hold labels and a matte, not colours: they carry none.
PHOTO_OUTPUTS = ("cutout", "blur", "replace", "overlay")
#: The ledger of what ``edgeseg predict`` wrote into an output folder.
LEDGER_NAME = ".edgeseg-predict.json"
LEDGER_SCHEMA = 1


@dataclass
class Prediction:
    """Full-resolution outputs for one image."""

    classes: np.ndarray  # uint8 [H, W]
    alpha: np.ndarray  # float32 [H, W] in [0, 1]: foreground probability (or refined matte)


@dataclass(frozen=True)
class Job:
    """One input image or video and the name of its output inside the output folder (posix, relative)."""

    source: Path
    name: str
    video: VideoInfo | None = None  # set by plan_predict for a video input

    @property
    def units(self) -> int:
        """Progress steps: 1 per image, 1 per frame of a video."""
        return max(self.video.frames, 1) if self.video else 1


@dataclass
class PredictPlan:
    """What ``run_predict`` will write: checked by ``plan_predict`` before anything runs."""

    out_dir: Path
    jobs: list[Job]
    output: str = "mask"
    background: np.ndarray | None = None  # uint8 HxWx3 for --output replace
    background_profile: bytes | None = None  # the background's ICC profile (None: sRGB)
    ledger: dict[str, str | list[str]] = field(default_factory=dict)  # output name -> sha256(s) edgeseg wrote
    held: dict[str, str] = field(default_factory=dict)  # output name -> sha256 of the file there now (ours)
    converted_backgrounds: dict = field(default_factory=dict, repr=False)  # ICC profile -> background in it

    @property
    def units(self) -> int:
        """Progress steps of the whole plan (images + video frames)."""
        return sum(job.units for job in self.jobs)

    @property
    def has_video(self) -> bool:
        return any(job.video for job in self.jobs)


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    warnings: list[str] = field(default_factory=list)  # e.g. the exported file failed its parity gate


# ----------------------------------------------------------------------------------------------
# planning: output names, and the checks that keep a user's files safe
# ----------------------------------------------------------------------------------------------


def _folder_jobs(folder: Path) -> list[Job]:
    """Images and videos under ``folder`` and its sub-folders (sorted), named by their path in it; what lies in
    a staging folder (a killed edgeseg run's leftovers, ``fsutil.staging_dir``) is not an input."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
                   and not any(map(is_staging, p.relative_to(folder).parts)))
    return [Job(p, p.relative_to(folder).with_name(_output_name(p)).as_posix()) for p in files]


def _output_name(path: Path) -> str:
    """``<stem>.png`` for an image, ``<stem>.mp4`` for a video."""
    return f"{path.stem}{OUTPUT_SUFFIX if is_video(path) else '.png'}"


def input_jobs(inputs) -> list[Job]:
    """Files as given (output ``<stem>.png``, a video ``<stem>.mp4``), folders expanded with their
    sub-folders mirrored (``photos/sub/a.jpg`` -> ``sub/a.png``); missing paths are kept, to be reported
    when read.
    """
    jobs: list[Job] = []
    for item in map(Path, inputs):
        jobs += _folder_jobs(item) if item.is_dir() else [Job(item, _output_name(item))]
    return jobs


def _listing(names: list, limit: int = 3) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _input_folders(inputs) -> list[tuple[Path, Path]]:
    """(as given, resolved) for each input that is a folder."""
    return [(item, item.resolve()) for item in map(Path, inputs) if item.is_dir()]


def _refuse_out_in_input_folder(inputs, out_dir: Path) -> None:
    """``--out`` may be neither an input folder nor inside one: outputs never go among the inputs (the
    folder's images under ``--out`` would not be read now and its outputs would be read as photos later)."""
    out = out_dir.resolve()
    for item, folder in _input_folders(inputs):
        if out.exists() and os.path.samefile(out, folder):
            raise EdgesegError(f"--out {out_dir} is the input folder {item}; outputs never go among the inputs, "
                               "choose another --out folder")
        if is_inside(out, folder):
            raise EdgesegError(f"--out {out_dir} is inside the input folder {item} (whose sub-folders are inputs too); "
                               f"outputs never go among the inputs, choose an --out folder outside {item}")


def _refuse_outputs_in_input_folders(jobs: list[Job], inputs, out_dir: Path) -> None:
    """No output may land inside an input folder through a mirrored sub-folder either (an input folder
    inside ``--out`` that holds a folder of its own name)."""
    folders = _input_folders(inputs)
    for job in jobs:
        dest = (out_dir / job.name).resolve()
        item = next((item for item, folder in folders if is_inside(dest.parent, folder)), None)
        if item is not None:
            raise EdgesegError(f"--out {out_dir} would write {job.name} into the input folder {item}; outputs never "
                               "go among the inputs, choose an --out folder outside the input folders")


def _refuse_collisions(jobs: list[Job]) -> None:
    """Two inputs with one output name (compared ignoring case, as macOS and Windows do) are refused."""
    seen: dict[str, Job] = {}
    clashes = []
    for job in jobs:
        first = seen.setdefault(job.name.casefold(), job)
        if first is not job:
            clashes.append((first, job))
    if clashes:
        first, second = clashes[0]
        more = f" (and {len(clashes) - 1} more clashes)" if len(clashes) > 1 else ""
        raise EdgesegError(f"inputs {first.source} and {second.source} would both be written to {second.name}{more}; "
                           "rename one, or run them into different --out folders")


def _refuse_writing_inputs(jobs: list[Job], out_dir: Path, extra_inputs=()) -> None:
    """No output path may resolve to an input file (symlinks and ``..`` included)."""
    inputs = {p.resolve() for p in [*(j.source for j in jobs), *map(Path, extra_inputs)] if p.exists()}
    hit = [job.source for job in jobs if (out_dir / job.name).resolve() in inputs]
    if hit:
        raise EdgesegError(f"--out {out_dir} would write over input {_listing(hit)}; choose another --out folder")


def _refuse_blocked_paths(jobs: list[Job], out_dir: Path) -> None:
    """An output whose place is a folder, or whose sub-folder cannot be made or written, is refused."""
    for parent in sorted({(out_dir / job.name).parent for job in jobs}):
        check_output(parent, is_dir=True, what="--out")
    for job in jobs:
        if (out_dir / job.name).is_dir():
            raise EdgesegError(f"{out_dir / job.name} is a folder; edgeseg predict writes a file there and never "
                               "replaces a folder")


def read_ledger(out_dir: Path, *, force: bool = False) -> dict[str, str | list[str]]:
    """The names and sha256 of the files edgeseg predict wrote in ``out_dir`` ({} when none): one sha256, or
    a list of them when the file holds one of those (it was being replaced).

    A ledger file that is not ours is refused (it would be replaced) unless ``force``; a folder in its place is
    refused even then (edgeseg never replaces a folder).
    """
    path = out_dir / LEDGER_NAME
    if path.is_dir():
        raise EdgesegError(f"{path} is a folder; edgeseg never replaces a folder: move it away or choose another --out")
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if data.get("schema_version") != LEDGER_SCHEMA or not all(_is_entry(v) for v in files.values()):
            raise ValueError("unknown layout")
        return dict(files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if force:
            return {}
        raise EdgesegError(f"{path} is not an edgeseg predict ledger ({exc.__class__.__name__}); "
                           "move it away, or pass --force to replace it") from None


def _is_entry(value) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value))


def _held(path: Path, entry: str | list[str] | None) -> str | None:
    """The sha256 ``path`` holds when it is one the ledger's ``entry`` recorded (the file is ours), else None."""
    if entry is None or not path.is_file():
        return None
    try:
        sha = sha256_file(path)
    except OSError:
        return None
    return sha if sha in ([entry] if isinstance(entry, str) else entry) else None


def _refuse_foreign_files(jobs: list[Job], out_dir: Path, ledger: dict, held: dict[str, str]) -> None:
    """An existing output file may be replaced only when the ledger lists it with its current sha256; the
    sha256 of each one that is ours goes into ``held``."""
    foreign = []
    for j in jobs:
        path = out_dir / j.name
        if path.exists() or path.is_symlink():
            sha = _held(path, ledger.get(j.name))
            if sha is None:
                foreign.append(path)
            else:
                held[j.name] = sha
    if foreign:
        raise EdgesegError(f"{len(foreign)} existing file(s) in --out {out_dir} were not written by edgeseg predict "
                           f"(or changed since): {_listing(foreign)}; pass --force to replace them")


def plan_predict(inputs, out_dir: str | Path, *, output: str = "mask", background: str | None = None,
                 force: bool = False) -> PredictPlan:
    """Check everything ``run_predict`` will need and write, before any model or image is touched.

    Promise: raises EdgesegError (one line, naming the files) and writes nothing when: the output
    mode or ``background`` is bad; ``out_dir`` cannot be a writable folder; there are no
    inputs or an input path that does not exist; ``out_dir`` is an input folder or inside one (or an
    output would land in one); two inputs map to one output name; an output would land on an input
    file; an output's place is a folder or lies under a file; an existing output file was not
    written by edgeseg predict (per the ledger and its sha256) - that one only without ``force``;
    or a video input has no decodable video stream. ``force`` never
    allows writing over an input.
    """
    if output not in OUTPUTS:
        raise EdgesegError(f"unknown output {output!r}; choose from {', '.join(OUTPUTS)}")
    if output == "replace" and not background:
        raise EdgesegError("--output replace needs --background IMAGE")
    if background and output != "replace":
        raise EdgesegError(f"--background is used only by --output replace, not --output {output}; drop it, or "
                           "pass --output replace")
    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing:
        raise DataError(f"input not found: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; check the path")
    out_dir = check_output(out_dir, is_dir=True, what="--out")
    _refuse_out_in_input_folder(inputs, out_dir)
    jobs = input_jobs(inputs)
    if not jobs:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}; edgeseg predict reads "
                        f"{' '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)} files (convert others, e.g. HEIC, to PNG)")
    _refuse_outputs_in_input_folders(jobs, inputs, out_dir)
    _refuse_collisions(jobs)
    _refuse_writing_inputs(jobs, out_dir, [background] if background else [])
    _refuse_blocked_paths(jobs, out_dir)
    ledger, held = read_ledger(out_dir, force=force), {}
    if not force:
        _refuse_foreign_files(jobs, out_dir, ledger, held)
    bg, bg_profile = read_image(background) if output == "replace" else (None, None)
    jobs = [Job(j.source, j.name, probe_video(j.source)) if is_video(j.source) else j for j in jobs]
    return PredictPlan(out_dir, jobs, output, bg, bg_profile, ledger, held)


# ----------------------------------------------------------------------------------------------
# one image
# ----------------------------------------------------------------------------------------------


def _linear_taps(n_in: int, n_out: int):
    """Bilinear resize along one axis as PyTorch does it (``align_corners=False``).

    Returns ``(i0, i1, t)``: ``out[k] = (1 - t[k]) * in[i0[k]] + t[k] * in[i1[k]]``.
    """
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, np.clip(src - i0, 0.0, 1.0).astype(np.float32)


def _logit_rows(logits: np.ndarray, h: int, w: int) -> Callable[[int, int], np.ndarray]:
    """Rows of ``logits`` ([C, h_in, w_in]) resized bilinearly to h x w, on demand: [C, rows, w] float32.

    Equals ``F.interpolate(..., mode="bilinear", align_corners=False)`` (within float32 rounding)
    without holding the full-size tensor: the width is resized once at the model's height.
    """
    x0, x1, tx = _linear_taps(logits.shape[2], w)
    wide = logits[:, :, x0] * (1 - tx) + logits[:, :, x1] * tx  # [C, h_in, w]
    y0, y1, ty = _linear_taps(logits.shape[1], h)

    def rows(a: int, b: int) -> np.ndarray:
        t = ty[a:b, None]
        return wide[:, y0[a:b]] * (1 - t) + wide[:, y1[a:b]] * t
    return rows


def _image_logit_bands(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, input_size):
    """(number of classes, bands): the model's logits for ``image`` upsampled bilinearly to its own
    size, a band of rows at a time (``compose.row_bands``), as ``(y0, y1, logits [C, y1 - y0, W])``."""
    logits = np.asarray(run(resize_pixels(image, input_size)[None]), dtype=np.float32)[0]
    h, w = image.shape[:2]
    rows = _logit_rows(logits, h, w)
    return logits.shape[0], ((y0, y1, rows(y0, y1)) for y0, y1, _, _ in compose.row_bands(h, w))


def predict_proba_image(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, input_size) -> np.ndarray:
    """Class probabilities of one uint8 RGB image of any size: float32 [C, H, W] at the image's own
    size, the softmax of the logits upsampled bilinearly (the same logits ``predict_image`` uses, so
    their arg-max is its ``classes``). Memory: 4 bytes per pixel and class."""
    num_classes, bands = _image_logit_bands(run, image, input_size)
    proba = np.empty((num_classes, *image.shape[:2]), np.float32)
    for y0, y1, z in bands:
        proba[:, y0:y1] = softmax(z, axis=0)
    return proba


def predict_image(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, input_size, *, refine: bool = False) -> Prediction:
    """Segment one uint8 RGB image of any size; outputs at the image's own size.

    ``classes`` is the arg-max class, ``alpha`` = 1 - softmax probability of class 0, both from
    the logits upsampled bilinearly to the image; with ``refine`` the matte is refined on the
    image's edges (``refine_alpha``) and, for a two-class model, ``classes`` = alpha >= 0.5.
    Memory: the two results (5 bytes per pixel) plus bands of work.
    """
    num_classes, bands = _image_logit_bands(run, image, input_size)
    h, w = image.shape[:2]
    alpha = np.empty((h, w), np.float32)
    classes = np.empty((h, w), np.uint8)
    for y0, y1, z in bands:
        classes[y0:y1] = z.argmax(0)
        alpha[y0:y1] = 1.0 - softmax(z, axis=0)[0]
    if refine:
        alpha = refine_alpha(image, alpha)
        if num_classes == 2:
            classes = (alpha >= 0.5).astype(np.uint8)
    return Prediction(classes, alpha)


def render(mode: str, image: np.ndarray, pred: Prediction, background: np.ndarray | None, *,
           icc_profile: bytes | None = None):
    """The PIL image for one output mode. ``icc_profile``: the colour profile ``image``'s pixels are in (None:
    sRGB); an output that shows them (``PHOTO_OUTPUTS``) carries it in ``info["icc_profile"]``, which Pillow
    embeds when the picture is saved as PNG, JPEG or WebP. ``background`` must be in that profile too
    (``in_profile``)."""
    if mode == "mask":
        return compose.palette_mask(pred.classes)
    if mode == "alpha":
        return compose.alpha_matte(pred.alpha)
    if mode == "cutout":
        picture = compose.cutout(image, pred.alpha)
    elif mode == "blur":
        picture = compose.blur_background(image, pred.alpha)
    elif mode == "replace":
        picture = compose.replace_background(image, pred.alpha, background)
    else:
        picture = compose.overlay(image, pred.classes)
    if icc_profile and mode in PHOTO_OUTPUTS:
        picture.info["icc_profile"] = icc_profile
    return picture


# ----------------------------------------------------------------------------------------------
# a batch
# ----------------------------------------------------------------------------------------------


class _Placer:
    """Puts one run's files into ``plan.out_dir``. ``place(dest)`` yields a path in a staging folder inside
    ``dest``'s own folder (``fsutil.staging_dir``: named with this process id, and a dead run's are removed
    when it is made). Finished files wait there and are installed in batches (``flush``): the ledger lists
    their sha256 first, then each is renamed onto its ``dest``. So a reader never sees a half-written file, a
    later run may replace every file that appears, and the ledger (which grows with the folder) is rewritten
    once per batch, not once per file (3000 files: 2.3 ms each when it was). ``close()`` installs the last
    batch, removes the staging folders, and every folder this run created that is empty."""

    BATCH_FILES, BATCH_SECONDS = 64, 2.0  # a batch is installed at this many files, or once this old

    def __init__(self, plan: PredictPlan):
        self.plan = plan
        self._stages: dict[Path, Path] = {}
        self._made: list[Path] = []
        self._pending: list[tuple[Path, Path, str]] = []  # (staged file, dest, sha256)
        self._since = time.monotonic()

    def _stage(self, folder: Path) -> Path:
        if folder not in self._stages:
            probe = folder
            while not probe.exists():
                self._made.append(probe)
                probe = probe.parent
            folder.mkdir(parents=True, exist_ok=True)
            self._stages[folder] = staging_dir(folder)
        return self._stages[folder]

    @contextlib.contextmanager
    def _staged(self, dest: Path) -> Iterator[Path]:
        """A path in ``dest``'s staging folder; removed if the block fails (an OSError then names ``dest``)."""
        tmp = self._stage(dest.parent) / dest.name
        try:
            yield tmp
        except OSError as exc:  # e.g. a full disk: name the output, not its temporary path
            tmp.unlink(missing_ok=True)
            if exc.errno is None or (exc.filename is not None and not is_staging(Path(os.fsdecode(exc.filename)).parent)):
                raise
            raise OSError(exc.errno, exc.strerror, str(dest)) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def place(self, dest: Path) -> Iterator[Path]:
        """The temporary path of ``dest`` (an output under ``out_dir``); when the block completes, the file
        joins the batch that ``flush`` lists in the ledger and renames into place; removed when it fails."""
        with self._staged(dest) as tmp:
            yield tmp
        self._pending.append((tmp, dest, sha256_file(tmp)))
        if len(self._pending) >= self.BATCH_FILES or time.monotonic() - self._since >= self.BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """List the pending files in the ledger, then rename each onto its place. The ledger is re-read under
        a lock on the folder and merged, so the entries of another edgeseg predict writing into the same
        folder at the same time survive (the last writer does not erase them)."""
        pending, self._pending, self._since = self._pending, [], time.monotonic()
        if not pending:
            return
        plan = self.plan
        names = {}
        for _, dest, sha in pending:  # a replaced file: either sha256 until its rename is done
            name = dest.relative_to(plan.out_dir).as_posix()
            old = plan.held.get(name)
            names[name] = [old, sha] if old not in (None, sha) else sha
        plan.ledger.update(names)
        with folder_lock(plan.out_dir):
            files = read_ledger(plan.out_dir, force=True)  # a ledger that is not ours was refused or --force'd at plan time
            files.update(names)
            payload = {"schema_version": LEDGER_SCHEMA, "tool": "edgeseg predict", "files": dict(sorted(files.items()))}
            ledger = plan.out_dir / LEDGER_NAME
            with self._staged(ledger) as tmp:
                tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
                os.replace(tmp, ledger)
        for tmp, dest, _ in pending:
            os.replace(tmp, dest)

    def close(self) -> None:
        """Install what is finished (also after an error or Ctrl-C: those files are whole), then tidy up."""
        try:
            self.flush()
        finally:
            for stage in self._stages.values():
                shutil.rmtree(stage, ignore_errors=True)
            for folder in sorted(self._made, key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: nothing was written there


def run_predict(model: str | None, plan: PredictPlan, *, refine: bool = False, threads: int | None = None,
                pick: str | None = None, on_progress: Callable[[Path], None] | None = None,
                smooth: SmoothCfg | bool = False) -> PredictReport:
    """Open ``model`` and segment every job of ``plan`` into ``out_dir`` (``predict_plan``); the report warns when
    the exported file opened failed its parity gate at export."""
    loaded = load_model(model, threads=threads, pick=pick)
    with loaded.runner:
        report = predict_plan(loaded.runner.run, loaded.view.input_size, plan, refine=refine, on_progress=on_progress,
                              smooth=smooth)
    report.warnings += failed_parity_warning(loaded)
    return report


def failed_parity_warning(loaded: LoadedModel) -> list[str]:
    """One line when ``loaded`` is an exported file whose parity gate failed at export (what it failed, the way
    on), else none: its outputs may differ from the model's, and nothing else would say so."""
    art = loaded.artifact
    if art is None or art.parity.get("passed") is not False:
        return []
    return [f"{art.file} failed its parity gate at export ({parity_problem(art.parity)}), so its masks may differ "
            "from the model's; use a file that passed (--artifact), or see 'When int8 fails parity' in the README"]


def predict_plan(run: Callable[[np.ndarray], np.ndarray], input_size, plan: PredictPlan, *, refine: bool = False,
                 on_progress: Callable[[Path], None] | None = None, smooth: SmoothCfg | bool = False) -> PredictReport:
    """Segment every job of ``plan`` with an open model's ``run`` and write ``out_dir/<name>`` per image or video.

    ``on_progress(source)`` is called once per image and once per video frame. ``smooth``: run
    video frames (and images, taken in order as the frames of one clip per folder) through the
    temporal stabilizer. An image or video that cannot be read is reported in ``failed`` and
    skipped. The ledger lists each file (atomically) before it appears, so a later run may replace it
    and nothing else. Whatever happens (a full disk, Ctrl-C), no temporary file stays, and a folder
    this run created is removed when nothing was written in it.
    """
    report = PredictReport()
    clip, step = None, run
    placer = _Placer(plan)
    try:
        for job in plan.jobs:
            key = job.source if job.video else job.source.parent  # a video, or a folder of frames, is one clip
            if key != clip:
                clip, step = key, frame_run(run, smooth)
            write = _predict_video if job.video else _predict_file
            try:
                write(job, plan, step, input_size, refine, on_progress, placer.place)
            except DataError as exc:
                report.failed.append((str(job.source), str(exc).removeprefix(f"{job.source}: ")))
            else:
                report.written.append(plan.out_dir / job.name)
    finally:
        placer.close()
    return report


def _predict_file(job: Job, plan: PredictPlan, run, input_size, refine: bool, on_progress, place) -> None:
    """One image: read it, segment it, write its output as PNG through ``place`` (``_Placer.place``)."""
    try:
        image, profile = read_image(job.source)
        pred = predict_image(run, image, input_size, refine=refine)
        picture = render(plan.output, image, pred, _background_in(plan, profile), icc_profile=profile)
        with place(plan.out_dir / job.name) as tmp:
            picture.save(tmp, format="PNG", icc_profile=picture.info.get("icc_profile"))
    finally:
        if on_progress:
            on_progress(job.source)


def _background_in(plan: PredictPlan, profile: bytes | None) -> np.ndarray | None:
    """``--background``'s pixels in the colour profile ``profile`` (a photo's), converted once per profile: an
    sRGB background composited into a Display P3 photo looks as it did once the output carries P3."""
    if plan.background is None or profile == plan.background_profile:
        return plan.background
    converted = plan.converted_backgrounds.get(profile)
    if converted is None:
        converted = plan.converted_backgrounds[profile] = in_profile(plan.background, plan.background_profile, profile)
    return converted


def video_frame(mode: str, image: np.ndarray, pred: Prediction, background: np.ndarray | None) -> np.ndarray:
    """One output frame: RGB, or the greyscale matte for ``alpha`` and ``cutout`` (video has no transparency)."""
    if mode in ("alpha", "cutout"):
        return np.asarray(compose.alpha_matte(pred.alpha))
    return np.asarray(render(mode, image, pred, background).convert("RGB"))


def _predict_video(job: Job, plan: PredictPlan, run, input_size, refine: bool, on_progress, place) -> None:
    """One video, frame by frame (memory independent of its length), written through ``place``."""
    info = job.video
    background = _background_in(plan, None)  # video frames carry no ICC profile: sRGB
    with video_writer(plan.out_dir / job.name, info.width, info.height, info.rate, rotation=info.rotation,
                      aspect=info.aspect, audio_from=job.source, place=place) as writer:
        for seconds, image in read_frames(job.source, expected=info.frames, duration_frames=info.duration_frames):
            pred = predict_image(run, image, input_size, refine=refine)
            writer.write(video_frame(plan.output, image, pred, background), seconds)
            if on_progress:
                on_progress(job.source)


def predict_files(model: str | None, inputs, out_dir: str | Path, *, output: str = "mask", background: str | None = None,
                  refine: bool = False, threads: int | None = None, pick: str | None = None, force: bool = False,
                  on_progress: Callable[[Path], None] | None = None, smooth: SmoothCfg | bool = False) -> PredictReport:
    """``plan_predict`` then ``run_predict``: segment every input image or video into ``out_dir``."""
    plan = plan_predict(inputs, out_dir, output=output, background=background, force=force)
    return run_predict(model, plan, refine=refine, threads=threads, pick=pick, on_progress=on_progress, smooth=smooth)
