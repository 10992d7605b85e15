"""Calibration and parity image sets for export (layer 4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.data.datasets import builtin_source, open_source
from edgeseg.data.images import IMAGE_SUFFIXES, load_image
from edgeseg.data.transforms import resize_pixels
from edgeseg.errors import DataError


def images_in_folder(folder: str | Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Up to ``count`` images (evenly spaced over the sorted list) from any folder tree, resized."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--calib {folder} is a file; it must be a folder of calibration images")
    if not folder.is_dir():
        raise DataError(f"calibration folder not found: {folder}; --calib must be a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "masks" not in p.parts)
    if not files:
        raise DataError(f"{folder}: no images for calibration")
    picks = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    return [resize_pixels(load_image(p), size) for p in dict.fromkeys(picks)]


def calibration_images(calib_dir: str | None, recipe_root: str | None, task: str, count: int,
                       size: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    """Calibration pixels: --calib DIR, else the recipe's training data, else the built-in set.

    The built-in calibration set uses its own seed, disjoint from the parity/eval set.
    """
    if calib_dir:
        return images_in_folder(calib_dir, count, size), str(calib_dir)
    if recipe_root and Path(recipe_root).is_dir():
        src = open_source(recipe_root, "train", need_masks=False, classes=("unused", "unused"))
        n = min(count, len(src))
        return [resize_pixels(src.get(i)[0], size) for i in range(n)], f"{recipe_root} (train split)"
    src = builtin_source("calib", task, count, size)
    return [src.get(i)[0] for i in range(count)], f"built-in synthetic {task} calibration set"


def parity_source(data_dir: str | None, task: str, count: int, size: tuple[int, int], classes):
    """(source, description): --data DIR's val split, else the built-in synthetic eval set."""
    if data_dir:
        return open_source(data_dir, "val", classes=tuple(classes)), f"{data_dir} (val split)"
    return builtin_source("eval", task, count, size), f"built-in synthetic {task} eval set"
