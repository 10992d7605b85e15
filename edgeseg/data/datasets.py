"""Dataset layouts and in-memory sources (layer 1).

Layouts: (a) folder pairs ``images/<id>.<ext>`` + ``masks/<id>.png`` (optionally under
``<split>/``; an id may hold sub-folders, ``trip/x``, mirrored in both), (b) Pascal VOC (``JPEGImages/``,
``SegmentationClass/``, ``ImageSets/Segmentation/<split>.txt``). A *source* yields (image uint8 HWC, mask uint8 HW, id).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeseg.data import synth
from edgeseg.data.images import IMAGE_SUFFIXES, ignore_is_filled, load_image, load_mask, quarter_turned_size
from edgeseg.errors import DataError

# Masks read up front by ``check_not_0_255`` (evenly spaced over the split): bounded, whatever the dataset's size
MASK_SAMPLE = 16

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class Source(Protocol):
    classes: tuple[str, ...]

    def __len__(self) -> int: ...

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, str]: ...


@dataclass(frozen=True)
class Pair:
    id: str
    image: Path
    mask: Path | None


def read_classes(root: Path) -> tuple[str, ...] | None:
    """Class names from ``root/classes.txt`` (one per line, a UTF-8 BOM allowed), or None if absent."""
    f = root / "classes.txt"
    if not f.is_file():
        return None
    names = tuple(line.strip() for line in f.read_text(encoding="utf-8-sig").splitlines() if line.strip())
    if len(names) < 2:
        raise DataError(f"{f}: needs at least two class names, found {len(names)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{f}: class {twice[0]!r} is listed twice; give each class one line, in class-id order")
    return names


def _files_in(folder: Path, suffixes: tuple[str, ...]) -> tuple[dict[str, Path], dict[str, Path]]:
    """(id -> file with one of ``suffixes``, id -> any other file) under ``folder``, sub-folders included.

    An id is the path relative to ``folder`` without its suffix (``sub/x`` for ``sub/x.jpg``); hidden
    files and folders are skipped. Two wanted files with one id (``x.jpg`` and ``x.png``) are an error.
    """
    wanted: dict[str, Path] = {}
    other: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        key = rel.with_suffix("").as_posix()
        if p.suffix.lower() not in suffixes:
            other.setdefault(key, p)
        elif key in wanted:
            raise DataError(f"{wanted[key]} and {p}: two files named {key}.*, and only one can be used; rename or "
                            "remove one")
        else:
            wanted[key] = p
    return wanted, other


def _no_mask(image: Path, masks_dir: Path, key: str, other: dict[str, Path]) -> DataError:
    found = f" (found {other[key]}: masks must be PNG, class ids as pixel values)" if key in other else ""
    return DataError(f"{image}: no mask {masks_dir / (key + '.png')}{found}")


def _folder_pairs(base: Path, need_masks: bool) -> list[Pair]:
    images, _ = _files_in(base / "images", IMAGE_SUFFIXES)
    masks_dir = base / "masks"
    masks, other = _files_in(masks_dir, (".png",)) if masks_dir.is_dir() else ({}, {})
    if need_masks:
        if not masks_dir.is_dir():
            raise DataError(f"{base}: has images/ but no masks/ folder")
        for key in images:
            if key not in masks:
                raise _no_mask(images[key], masks_dir, key, other)
        for key in masks:
            if key not in images:
                raise DataError(f"{masks[key]}: no image named {key}.* in {base / 'images'}")
    return [Pair(k, images[k], masks.get(k)) for k in sorted(images)]


def _voc_pairs(root: Path, split: str) -> list[Pair]:
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        have = sorted(p.stem for p in listing.parent.glob("*.txt"))
        raise DataError(f"{root}: no split '{split}' (VOC layout has no {listing}); {_choose(have)}")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    pairs = []
    for i in ids:
        img, mask = root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png"
        if not img.is_file():
            raise DataError(f"{listing}: lists {i} but {img} is missing")
        if not mask.is_file():
            raise DataError(f"{listing}: lists {i} but {mask} is missing")
        pairs.append(Pair(i, img, mask))
    return pairs


def _choose(splits: list[str]) -> str:
    return f"choose one of: {', '.join(splits)}" if splits else "it lists no splits"


def split_names(root: Path) -> list[str]:
    """The splits a folder-layout dataset has: its ``<split>/images`` folders, else train and val (derived)."""
    folders = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
    return folders or (["train", "val"] if (root / "images").is_dir() else [])


def detect_layout(root: Path) -> str:
    """'voc' or 'folder'; DataError if neither layout is present."""
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return "voc"
    if (root / "images").is_dir() or any((root / s / "images").is_dir() for s in ("train", "val", "test")):
        return "folder"
    raise DataError(f"{root}: not a dataset folder (expected images/ + masks/, <split>/images/, or VOC JPEGImages/ + SegmentationClass/)")


def discover_pairs(root: str | Path, split: str, *, val_fraction: float = 0.1, need_masks: bool = True) -> list[Pair]:
    """The (image, mask) pairs of ``split`` in a dataset folder; DataError if empty or broken.

    A folder layout without split sub-folders has the splits 'train' and 'val', made
    deterministically: every k-th id (sorted) goes to 'val' where k = round(1 / val_fraction).
    Any other split name is an error listing the splits the folder has.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a dataset folder; give the folder that holds images/ and masks/ "
                        "(see 'Training on your own data' in the README)")
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    if detect_layout(root) == "voc":
        pairs = _voc_pairs(root, split)
    elif (root / split / "images").is_dir():
        pairs = _folder_pairs(root / split, need_masks)
    elif (root / "images").is_dir() and split in ("train", "val"):
        pairs = _folder_pairs(root, need_masks)
        if 0 < val_fraction < 1:
            k = max(2, round(1 / val_fraction))
            pairs = [p for i, p in enumerate(pairs) if (i % k == k - 1) == (split == "val")]
    else:
        raise DataError(f"{root}: no split '{split}' (no {root / split / 'images'}); {_choose(split_names(root))}")
    if not pairs:
        raise _empty_split(root, split)
    return pairs


def _empty_split(root: Path, split: str) -> DataError:
    """The error for a split with no pairs, with the advice that fits its layout."""
    if detect_layout(root) == "voc":
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        return DataError(f"{listing}: lists no ids; add the ids of split '{split}', one a line")
    if (root / split / "images").is_dir():
        return DataError(f"{root / split / 'images'}: split '{split}' has no images; add images (and their masks in "
                         f"{root / split / 'masks'})")
    return DataError(f"{root}: split '{split}' is empty; add images, give it its own {split}/ folder, "
                     "or raise data.val_fraction")


def _size_mismatch(p: Pair, mask: tuple[int, int], image: tuple[int, int]) -> DataError:
    """The error for a mask of another size than its image ((height, width) each, the image as shown); when the
    image is EXIF-rotated and the mask has its stored size, it says so: the mask follows the stored pixels."""
    sizes = f"{p.mask}: mask size {mask[1]}x{mask[0]} != image size {image[1]}x{image[0]}"
    stored = quarter_turned_size(p.image)
    if stored == (mask[1], mask[0]):
        return DataError(f"{sizes}: {p.image.name} is EXIF-rotated (stored {stored[0]}x{stored[1]}, shown "
                         f"{image[1]}x{image[0]}); masks must follow the shown orientation: rotate the mask, or save "
                         "the photo upright")
    return DataError(f"{sizes} ({p.image.name}); a mask has its image's size: check that it is this image's mask")


class FileSource:
    """Image/mask pairs read from disk, validated on read."""

    def __init__(self, pairs: list[Pair], classes: tuple[str, ...]):
        self.pairs = pairs
        self.classes = tuple(classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        p = self.pairs[i]
        image = load_image(p.image)
        if p.mask is None:
            return image, None, p.id
        mask = load_mask(p.mask, len(self.classes))
        if mask.shape != image.shape[:2]:
            raise _size_mismatch(p, mask.shape, image.shape[:2])
        return image, mask, p.id

    def validate(self) -> None:
        """Read every pair once so a bad file fails before training starts."""
        for i in range(len(self)):
            self.get(i)


class SynthSource:
    """The built-in synthetic set, rendered deterministically and cached in memory."""

    def __init__(self, task: str, count: int, size: tuple[int, int], seed: int):
        if task not in synth.TASKS:
            raise DataError(f"unknown synthetic task {task!r}; choose one of {', '.join(synth.TASKS)}")
        self.task, self.count, self.size, self.seed = task, count, tuple(size), seed
        self.classes = tuple(synth.TASKS[task])
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.count

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        if i not in self._cache:
            s = synth.render(self.task, self.size, synth.sample_seed(self.seed, i))
            self._cache[i] = (s.image, s.mask, f"synth_{i:06d}", s.attrs)
        image, mask, sid, _ = self._cache[i]
        return image, mask, sid

    def attrs(self, i: int) -> dict:
        """Slice attributes (skin tone, lighting, hair type, background) of sample i."""
        self.get(i)
        return self._cache[i][3]


# Fixed seeds of the built-in sets; train, calibration and evaluation never overlap.
SYNTH_SEEDS = {"train": 0, "val": 1, "eval": 12345, "calib": 777}


def builtin_source(split: str, task: str = "portrait", count: int = 64, size: tuple[int, int] = (256, 256)) -> SynthSource:
    """The deterministic built-in synthetic set for 'train' | 'val' | 'eval' | 'calib'."""
    return SynthSource(task, count, size, SYNTH_SEEDS[split])


def open_source(root: str | Path | None, split: str, *, classes: tuple[str, ...] | None = None, task: str = "portrait",
                count: int = 64, size: tuple[int, int] = (256, 256), val_fraction: float = 0.1,
                need_masks: bool = True) -> Source:
    """A dataset folder's split, or the built-in synthetic set when ``root`` is None."""
    if root is None:
        return builtin_source(split, task, count, size)
    root = Path(root)
    pairs = discover_pairs(root, split, val_fraction=val_fraction, need_masks=need_masks)
    names = classes or read_classes(root) or (VOC_CLASSES if detect_layout(root) == "voc" else None)
    if names is None:
        raise DataError(f"{root}: no classes.txt; list the class names in the recipe (data.classes)")
    check_not_0_255(pairs, tuple(names))
    return FileSource(pairs, tuple(names))


def check_not_0_255(pairs: list[Pair], classes: tuple[str, ...]) -> None:
    """Refuse masks saved as 0/255 binary images (white = the object), which would train on 'ignore' alone.

    Reads at most ``MASK_SAMPLE`` masks, evenly spaced. DataError when none of them holds a class id
    other than 0 and one holds a solid 255 area (not only VOC-style thin outlines).
    """
    with_masks = [p for p in pairs if p.mask is not None]
    step = max(1, len(with_masks) // MASK_SAMPLE)
    suspect = None
    for p in with_masks[::step][:MASK_SAMPLE]:
        mask = load_mask(p.mask, len(classes))
        if ((mask > 0) & (mask < 255)).any():
            return
        if suspect is None and ignore_is_filled(mask):
            suspect = p.mask
    if suspect is not None:
        raise DataError(f"{suspect}: mask holds only 0 and 255; edgeseg reads 255 as 'ignore' and class ids as "
                        f"0..{len(classes) - 1}: save {classes[1]} as 1"
                        + (", e.g. mask // 255" if len(classes) == 2 else ", each class as its id"))


def class_list(classes) -> str:
    """A class list in one line, in order: ``[background, person]``."""
    return f"[{', '.join(classes)}]"


def check_data_classes(root: str | Path, classes, model: str) -> None:
    """DataError (exit 2) when the dataset folder ``root`` lists classes (its classes.txt) other than
    ``classes``, the classes of ``model`` in order: label k would be scored as the model's class k, which names
    something else. A folder without a class list is taken as labelled with ``classes``."""
    listed = read_classes(Path(root))
    if listed is None or tuple(listed) == tuple(classes):
        return
    raise DataError(f"{Path(root) / 'classes.txt'} lists the classes {class_list(listed)} but {model} predicts "
                    f"{class_list(classes)} (in that order); relabel the data with the model's classes, or fine-tune the "
                    f"model on it (edgeseg train --weights MODEL --data {root})")
