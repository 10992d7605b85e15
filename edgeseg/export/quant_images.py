"""Calibration and parity image sets for export (layer 4)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgeseg.data.clips import is_clip_dataset
from edgeseg.data.datasets import builtin_source, check_data_classes, detect_layout, discover_pairs, open_source, split_names
from edgeseg.data.images import IMAGE_SUFFIXES, load_image
from edgeseg.data.transforms import photometric_steps, resize_pixels
from edgeseg.errors import DataError
from edgeseg.recipe import AugmentCfg, DataCfg

AUGMENT_SEED = 0  # calibration augmentations come from their own seeded generator: every export sees the same pixels


# folders of label images (masks, palette PNGs) that a folder of photos may hold beside them: never calibrated on
LABEL_FOLDERS = frozenset({"masks", "SegmentationClass", "SegmentationObject", "SegmentationClassAug", "labels"})


def _photo_folders(folder: Path) -> list[Path]:
    """Where the photos of ``folder`` are: the image folders of a dataset layout edgeseg reads (VOC
    ``JPEGImages/``; ``images/`` and ``<split>/images/``), else ``folder`` itself."""
    try:
        layout = detect_layout(folder)
    except DataError:  # not a dataset layout: any folder of images
        return [folder]
    if layout == "voc":
        return [folder / "JPEGImages"]
    candidates = [folder / "images", *(folder / split / "images" for split in split_names(folder))]
    return [p for p in dict.fromkeys(candidates) if p.is_dir()]


def image_files(folder: Path) -> list[Path]:
    """The photos under ``folder``, sorted: a dataset layout's images only (not its masks), else every image in
    the tree outside the label folders (``LABEL_FOLDERS``)."""
    files = []
    for root in _photo_folders(folder):
        files += [p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and not LABEL_FOLDERS & set(p.relative_to(root).parts)]
    return sorted(files)


def check_folder(folder: str | Path, *, option: str = "--calib", purpose: str = "calibration") -> Path:
    """``folder`` as a Path; DataError when it is missing or a file (``option``, ``purpose`` as in ``images_in_folder``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{option} {folder} is a file; it must be a folder of {purpose} images")
    if not folder.is_dir():
        raise DataError(f"{purpose} folder not found: {folder}; {option} must be a folder of images")
    if folder.resolve().name in LABEL_FOLDERS:
        raise DataError(f"{option} {folder} is a label folder (its images are masks); pass the folder of photos "
                        f"(e.g. {folder.resolve().parent / 'images'}), or the dataset folder itself")
    return folder


def images_in_folder(folder: str | Path, count: int, size: tuple[int, int], *, option: str = "--calib",
                     purpose: str = "calibration") -> list[np.ndarray]:
    """Up to ``count`` images (evenly spaced over the sorted list of ``image_files``), resized.

    ``option`` names the flag the folder came from and ``purpose`` what the images are for, in the
    DataError (exit 2) raised for a missing or empty folder or an unreadable image.
    """
    folder = check_folder(folder, option=option, purpose=purpose)
    files = image_files(folder)
    if not files:
        raise DataError(f"{option} {folder}: no images for {purpose} (reads {', '.join(IMAGE_SUFFIXES)} files, in "
                        "subfolders too, skipping masks/ and other label folders); put photos like the ones the model "
                        "will see there, or pass another folder")
    picks = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    return [resize_pixels(_load(p, option, folder), size) for p in dict.fromkeys(picks)]


def _load(path: Path, option: str, folder: Path) -> np.ndarray:
    """``load_image``, its DataError saying what to do about the file."""
    try:
        return load_image(path)
    except DataError as exc:
        raise DataError(f"{exc}; re-save or remove that file, or move it out of {option} {folder}") from None


@dataclass(frozen=True)
class CalibrationSet:
    """The images int8 files are calibrated on, and where they came from (recorded in the manifest)."""

    images: list[np.ndarray]  # uint8 RGB HWC at the model's input size
    source: str  # in words, including the augmentations applied
    augment: dict | None = None  # the training augmentations applied ({color, corrupt, seed}); None: none were

    def manifest_entry(self) -> dict:
        return {"source": self.source, "images": len(self.images), "augment": self.augment}


def augment_pixels(images: list[np.ndarray], augment: AugmentCfg, seed: int = AUGMENT_SEED) -> list[np.ndarray]:
    """``images`` under the pixel-only steps of the training augmentation (colour jitter, phone-camera
    corruptions; see ``photometric_steps``), deterministic for ``seed``; torch's global random state is
    left as it was. Geometric steps (flip, affine) are left out: they add borders, not new pixel values."""
    steps = photometric_steps(color=augment.color, corrupt=augment.corrupt)
    if not steps:
        return list(images)
    transform = v2.Compose(steps)
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for image in images:
            pixels = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
            pixels, _ = transform(pixels, None)
            out.append(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()))
    return out


class ExportWarning(UserWarning):
    """Something an export does less well than asked, not refused (``edgeseg export`` prints a ``warning:`` line)."""


class CalibrationWarning(ExportWarning):
    """Calibration images fewer than asked for."""


class ParityImagesWarning(ExportWarning):
    """Fewer parity images than ``--parity-images`` asks for (a small --data val split)."""


def _warn_if_few(images: list, count: int, folder: str) -> None:
    """CalibrationWarning when --calib ``folder`` gave fewer images than ``count`` or only one."""
    if len(images) >= count and len(images) > 1:
        return
    found = "only 1 image" if len(images) == 1 else f"{len(images)} images, fewer than --calib-count {count}"
    warnings.warn(CalibrationWarning(
        f"--calib {folder} has {found}: int8 activation ranges are calibrated on what these show and clip the rest; "
        f"add more photos like the ones the model will see"), stacklevel=3)


#: the built-in images used for a model whose classes match no built-in set: pixels only, never labels
FALLBACK_TASK = "portrait"


def calibration_images(calib_dir: str | None, recipe_root: str | None, task: str | None, count: int,
                       size: tuple[int, int], augment: AugmentCfg | None = None,
                       val_fraction: float = DataCfg.val_fraction) -> CalibrationSet:
    """Calibration pixels: --calib DIR as they are; else the recipe's training data, else the built-in set,
    each under the training augmentations ``augment`` (the recipe's; None when the model has no recipe).

    The built-in calibration set uses its own seed, disjoint from the parity/eval set. ``task`` None
    (no built-in set has the model's classes): the built-in portrait pixels, and the source says so.
    """
    if calib_dir:
        images = images_in_folder(calib_dir, count, size)
        _warn_if_few(images, count, calib_dir)
        return CalibrationSet(images, str(Path(calib_dir).resolve()))  # absolute, as training stores data.root
    if recipe_root and Path(recipe_root).is_dir():
        # the pixels only: its masks (any number of classes) are the training run's business
        pairs = discover_pairs(recipe_root, "train", val_fraction=val_fraction, need_masks=False)
        images = [resize_pixels(load_image(p.image), size) for p in pairs[:count]]
        source = f"{recipe_root} (train split)"
    else:
        src = builtin_source("calib", task or FALLBACK_TASK, count, size)
        images = [src.get(i)[0] for i in range(count)]
        source = (f"built-in synthetic {task} calibration set" if task else
                  f"built-in synthetic {FALLBACK_TASK} images (no built-in set has the model's classes; "
                  "pass --calib DIR with images like the ones it will see)")
        if recipe_root:  # trained on a folder that is not here (another machine, moved): say so, with the fix
            source += (f" (the checkpoint's training data {recipe_root} is not on this machine; pass --calib DIR "
                       "with images like it)")
    if augment is None:
        return CalibrationSet(images, f"{source}, not augmented (the model carries no training recipe)")
    if not photometric_steps(color=augment.color, corrupt=augment.corrupt):
        return CalibrationSet(images, f"{source}, not augmented (the recipe's training augmentation has no "
                                      "colour or corruption step: color 0, corrupt 0)")
    record = {"color": augment.color, "corrupt": augment.corrupt, "seed": AUGMENT_SEED}
    return CalibrationSet(augment_pixels(images, augment), f"{source} with the recipe's training augmentations "
                          f"(color {augment.color:g}, corrupt {augment.corrupt:g}; seed {AUGMENT_SEED})", record)


def parity_source(data_dir: str | None, task: str | None, count: int, size: tuple[int, int], classes,
                  val_fraction: float = DataCfg.val_fraction):
    """(source, description): --data DIR's val split (``val_fraction`` of a folder without split folders: the
    training run's), else the built-in synthetic eval set of ``task``.

    ``task`` None (no built-in set has the model's classes): the built-in portrait images without
    their labels, so parity is agreement with PyTorch only, and the description says so.
    """
    if data_dir:
        check_still_images(data_dir, classes)
        source = open_source(data_dir, "val", classes=tuple(classes), val_fraction=val_fraction)
        if len(source) < count:
            warnings.warn(ParityImagesWarning(
                f"--data {data_dir}: its val split has {len(source)} image{'s' * (len(source) != 1)}, fewer than "
                f"--parity-images {count}: parity and stress parity are checked on those only; add labelled images "
                "(or val/ images) for a firmer check"), stacklevel=2)
        used = min(len(source), count)
        return source, f"{data_dir} (val split, {used} image{'s' * (used != 1)})"
    if task is None:
        return (Unlabelled(builtin_source("eval", FALLBACK_TASK, count, size)),
                f"built-in synthetic {FALLBACK_TASK} images, agreement only: no built-in set has the model's classes "
                f"({', '.join(classes)}); pass --data DIR with labelled images for accuracy numbers")
    return builtin_source("eval", task, count, size), f"built-in synthetic {task} eval set"


def check_still_images(data_dir: str, classes) -> None:
    """DataError (exit 2) when --data ``data_dir`` is a clip dataset (parity runs on still images) or lists
    classes other than the model's ``classes``."""
    if is_clip_dataset(data_dir):
        raise DataError(f"--data {data_dir} is a clip dataset (one folder of frames and masks per clip); export checks "
                        "parity on still images: pass a dataset folder with images/ and masks/, and evaluate the clips "
                        f"with edgeseg eval MODEL --data {data_dir}")
    check_data_classes(data_dir, classes, "the model")


class Unlabelled:
    """A source's images and ids without its masks (pixels to compare runtimes on, not labels)."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def get(self, i: int):
        image, _, sid = self.source.get(i)
        return image, None, sid
