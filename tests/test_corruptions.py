"""Phone-camera corruptions and real photographs for stress parity; the training-time corruption transform."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.data.corruptions import CORRUPTIONS, PHOTOMETRIC, corrupt, real_photo_crops, stress_images
from edgeseg.data.datasets import builtin_source
from edgeseg.data.transforms import train_transform


@pytest.fixture(scope="module")
def portrait():
    return builtin_source("eval", "portrait", 1, (64, 48)).get(0)[0]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_and_changes_the_image(portrait, name):
    a, b, c = corrupt(portrait, name, 1), corrupt(portrait, name, 1), corrupt(portrait, name, 2)
    assert a.shape == portrait.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, portrait)
    assert not np.array_equal(a, c) or name in ("color_cast",)  # a seed picks a different strength


def test_exposure_and_low_light_move_brightness_the_right_way(portrait):
    mean = portrait.mean()
    assert corrupt(portrait, "underexposure", 0).mean() < 0.65 * mean
    assert corrupt(portrait, "overexposure", 0).mean() > 1.2 * mean
    assert corrupt(portrait, "low_light", 0).mean() < 0.4 * mean


def test_real_photos_come_from_an_installed_package():
    crops = real_photo_crops((40, 32))
    assert len(crops) == 8 and all(img.shape == (40, 32, 3) and img.dtype == np.uint8 for _, img in crops)
    assert crops[0][0] == "grace_hopper:full" and crops[0][1].std() > 20  # a real photograph, not a flat fill


def test_stress_set_covers_every_corruption_and_the_real_photos(portrait):
    images, ids = stress_images(np.stack([portrait] * 5), [f"p{i}" for i in range(5)], (64, 48))
    assert len(images) == len(ids) == 5 * 2 + 5  # one real-photo image per image: a third of the set
    named = {i.rsplit(":", 1)[-1] for i in ids}
    assert set(CORRUPTIONS) <= named and "grace_hopper:full" in ids
    again, _ = stress_images(np.stack([portrait] * 5), [f"p{i}" for i in range(5)], (64, 48))
    assert np.array_equal(images, again)


def test_training_corruption_is_seeded_and_leaves_the_mask():
    src = builtin_source("train", "portrait", 2, (64, 64))
    image, mask, _ = src.get(0)
    t = train_transform((64, 64), hflip=False, scale=(1, 1), rotate=0, color=0, corrupt=1.0)
    from edgeseg.data.transforms import SegDataset

    ds = SegDataset(src, t)
    torch.manual_seed(3)
    a, ma = ds[0]
    torch.manual_seed(3)
    b, _ = ds[0]
    assert torch.equal(a, b) and not np.array_equal(a.permute(1, 2, 0).numpy(), image)
    assert set(PHOTOMETRIC) < set(CORRUPTIONS)
    torch.manual_seed(3)  # the same affine draw (the corruption comes after it)
    clean = SegDataset(src, train_transform((64, 64), hflip=False, scale=(1, 1), rotate=0, color=0))[0]
    assert torch.equal(ma, clean[1])  # geometry and labels untouched
