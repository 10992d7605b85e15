"""Augmentation and normalization with torchvision transforms v2 (layer 1).

Images stay uint8 until ``normalize`` (done on the training device); masks are
``tv_tensors.Mask`` so geometric transforms use nearest and pad with 255 (ignore).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgeseg.data.corruptions import PHOTOMETRIC, corrupt
from edgeseg.metrics import IGNORE_INDEX


class PhoneCorruption:
    """With probability ``p``, one photometric phone-camera corruption (noise, blur, JPEG, exposure,
    colour cast, low light) of the image; the mask is unchanged. Random draws come from torch's
    generator, so a seeded epoch replays exactly."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img, msk):
        if self.p <= 0 or torch.rand(()).item() >= self.p:
            return img, msk
        name = PHOTOMETRIC[int(torch.randint(len(PHOTOMETRIC), ()))]
        pixels = corrupt(img.permute(1, 2, 0).numpy(), name, int(torch.randint(2**31 - 1, ())))
        # np.array: a writable copy (a JPEG-decoded corruption is read-only)
        return tv_tensors.Image(torch.from_numpy(np.array(pixels, order="C")).permute(2, 0, 1)), msk


def train_transform(size: tuple[int, int], *, hflip: bool, scale: Sequence[float], rotate: float, color: float,
                    corrupt: float = 0.0) -> v2.Compose:
    """Random flip/affine (scale, rotation, shift)/colour jitter, then resize to ``size``; then, with
    probability ``corrupt``, one photometric phone-camera corruption (``PhoneCorruption``)."""
    steps: list = [v2.Resize(size, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.RandomAffine(degrees=rotate, translate=(0.1, 0.1), scale=tuple(scale),
                                 fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}))
    return v2.Compose(steps + photometric_steps(color=color, corrupt=corrupt))


def photometric_steps(*, color: float, corrupt: float) -> list:
    """The pixel-only steps of ``train_transform`` (colour jitter, then ``PhoneCorruption``), in its order;
    each takes and returns ``(image, mask)`` and leaves the mask as it is. Empty when both are 0."""
    steps: list = []
    if color > 0:
        steps.append(v2.ColorJitter(brightness=color, contrast=color, saturation=color, hue=min(0.5, color / 6)))
    if corrupt > 0:
        steps.append(PhoneCorruption(corrupt))
    return steps


def eval_transform(size: tuple[int, int]) -> v2.Compose:
    """Resize to the model input (masks with nearest)."""
    return v2.Compose([v2.Resize(size, antialias=True)])


def normalize(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NCHW pixels -> float32 (pixel - mean) / std, mean/std in 0-255 units."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    return (images_uint8.float() - m) / s


def resize_pixels(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HWC -> uint8 HWC at ``size`` (h, w), bilinear with antialias (as the training resize)."""
    if image.shape[:2] == tuple(size):
        return image
    t = torch.from_numpy(np.array(image, order="C")).permute(2, 0, 1)  # a writable copy
    return v2.functional.resize(t, list(size), antialias=True).permute(1, 2, 0).numpy()


class SegDataset(Dataset):
    """Wraps a Source: returns (uint8 image CHW tensor, int64 mask HW tensor)."""

    def __init__(self, source, transform: v2.Compose):
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        image, mask, _ = self.source.get(i)
        # own, writable copies: a source may hand out read-only arrays (np.asarray of a decoded image)
        img = tv_tensors.Image(torch.from_numpy(np.array(image, order="C")).permute(2, 0, 1))
        msk = tv_tensors.Mask(torch.from_numpy(np.array(mask, order="C")))
        img, msk = self.transform(img, msk)
        return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor).long()
