"""The stress set's make-up: its share of real photos does not depend on --parity-images (export or bench), and
the default set (16 parity images) is the one exports have always stored."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.bench.parity import ReferenceSet
from edgeseg.data.corruptions import CORRUPTIONS, REAL_PHOTOS, corrupt, real_photo_crops, stress_images

SIZE = (48, 40)
STEMS = tuple(name.rsplit(".", 1)[0] for name in REAL_PHOTOS)


@pytest.fixture(scope="module")
def parity_images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, *SIZE, 3), dtype=np.uint8), [f"p{i}" for i in range(16)]


def is_real(image_id: str) -> bool:
    return image_id.split(":")[0] in STEMS


def real_share(ids: list[str]) -> float:
    return sum(map(is_real, ids)) / len(ids)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_the_share_of_real_photos_does_not_depend_on_the_number_of_parity_images(parity_images, n):
    images, ids = parity_images
    _, default = stress_images(images, ids, SIZE)
    _, few = stress_images(images[:n], ids[:n], SIZE)
    assert real_share(few) == real_share(default) == pytest.approx(1 / 3)
    if n >= 2:  # the first real-photo images cover both photos
        assert {i.split(":")[0] for i in few if is_real(i)} == set(STEMS)


def test_the_default_stress_set_is_the_one_exports_always_stored(parity_images):
    """16 parity images: each under 2 corruptions, the cycle going on through the 8 real-photo crops (clean and
    corrupted) where the parity images left off, as before the make-up was fixed (same ids and pixels)."""
    images, ids = parity_images
    names = list(CORRUPTIONS)
    expected = {}
    for k in range(32):
        expected[f"{ids[k // 2]}:{names[k % len(names)]}"] = corrupt(images[k // 2], names[k % len(names)], k)
    for j, (photo_id, photo) in enumerate(real_photo_crops(SIZE), start=32):
        expected[photo_id] = photo
        expected[f"{photo_id}:{names[j % len(names)]}"] = corrupt(photo, names[j % len(names)], j)
    got, got_ids = stress_images(images, ids, SIZE)
    assert sorted(got_ids) == sorted(expected) and len(got_ids) == 48
    for image_id, image in zip(got_ids, got):
        np.testing.assert_array_equal(image, expected[image_id], err_msg=image_id)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_bench_parity_images_n_checks_the_stress_set_an_export_of_n_images_has(parity_images, n):
    """``bench --parity-images N`` on a default export (``ReferenceSet.head``) checks the same stress images,
    pixel for pixel, as ``export --parity-images N`` makes."""
    images, ids = parity_images
    stress, stress_ids = stress_images(images, ids, SIZE)
    labels = np.zeros((len(images), *SIZE), np.uint8)
    ref = ReferenceSet(images, None, ids, None, ("a", "b"), "test", argmax=labels)
    ref.stress = ReferenceSet(stress, None, stress_ids, None, ("a", "b"), "stress", argmax=np.zeros(stress.shape[:3], np.uint8))
    sub = ref.head(n).stress
    exported, exported_ids = stress_images(images[:n], ids[:n], SIZE)
    assert sorted(sub.ids) == sorted(exported_ids) and real_share(sub.ids) == pytest.approx(1 / 3)
    by_id = dict(zip(sub.ids, sub.images))
    for image_id, image in zip(exported_ids, exported):
        np.testing.assert_array_equal(by_id[image_id], image, err_msg=image_id)
