"""Segmentation metrics on hand-made masks whose answers are counted by hand (no model involved)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.metrics import IGNORE_INDEX, SegMetrics, agreement_miou, band_width, boundary_band


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + side, left:left + side] = 1
    return mask


def test_miou_pixel_accuracy_and_per_class_iou_on_shifted_squares():
    target = square(10, 2, 2, 4)  # 16 foreground pixels
    pred = square(10, 2, 3, 4)  # shifted one column: 12 shared, 4 + 4 differ
    m = SegMetrics(2, ("background", "person"))
    m.update(pred, target, boundary=False)
    # person: 12 / (16 + 16 - 12) = 0.6; background: 80 / (84 + 84 - 80) = 80 / 88
    assert m.iou() == pytest.approx([80 / 88, 0.6])
    assert m.miou() == pytest.approx((80 / 88 + 0.6) / 2)
    assert m.pixel_accuracy() == pytest.approx(92 / 100)
    assert m.summary()["per_class_iou"] == {"background": round(80 / 88, 6), "person": 0.6}


def test_ignored_pixels_never_count():
    target = square(10, 2, 2, 4)
    pred = square(10, 2, 3, 4)
    target_ignored = target.copy()
    target_ignored[:, 6] = IGNORE_INDEX  # the column where only the prediction is foreground
    m = SegMetrics(2)
    m.update(pred, target_ignored, boundary=False)
    # person: 12 / (16 + 12 - 12) = 0.75 (the 4 predicted pixels in the ignored column are gone);
    # background: 74 / (74 + 78 - 74) (the 10 ignored pixels removed from both)
    assert m.confusion.sum() == 90
    assert m.iou() == pytest.approx([74 / 78, 0.75])


def test_counts_accumulate_over_images_before_dividing():
    a, b = square(10, 0, 0, 5), square(10, 5, 5, 5)
    m = SegMetrics(2)
    m.update(np.stack([a, np.zeros_like(b)]), np.stack([a, b]), boundary=False)
    # person: 25 right in image 1, 25 missed in image 2 -> 25 / 50 over the dataset (not mean(1.0, 0.0) by chance)
    assert m.iou()[1] == pytest.approx(0.5) and m.images == 2


def test_a_class_absent_from_prediction_and_target_is_left_out_of_the_mean():
    m = SegMetrics(3)
    t = square(8, 0, 0, 4)
    m.update(t, t, boundary=False)
    assert np.isnan(m.iou()[2]) and m.miou() == 1.0
    assert m.summary()["per_class_iou"]["2"] is None


def test_boundary_band_of_a_square_is_its_ring():
    mask = square(20, 5, 5, 10)
    band = boundary_band(mask, 2)
    # a 10x10 square minus its 6x6 interior (eroded by 2 px on each side)
    assert band.sum() == 100 - 36
    assert band[5, 5] and band[6, 6] and not band[7, 7] and not band[0, 0]
    assert not boundary_band(np.zeros((5, 5), bool), 2).any()


def test_boundary_iou_sees_an_edge_error_that_miou_hides():
    target = square(100, 20, 20, 60)  # 3600 px
    nicked = target.copy()
    nicked[20:80:2, 20] = 0  # every other pixel of one edge wrong: 30 of 3600 pixels
    m = SegMetrics(2)
    m.update(nicked, target)
    w = band_width(100, 100)
    assert w == 3
    person_iou = (3600 - 30) / 3600
    assert m.iou()[1] == pytest.approx(person_iou)
    # inside the bands the same 30 pixels weigh more, and the nicks add band pixels of their own
    assert m.boundary_iou() < m.miou()
    perfect = SegMetrics(2)
    perfect.update(target, target)
    assert perfect.boundary_iou() == 1.0


def test_agreement_miou_is_symmetric_and_one_on_identical_maps():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, (2, 16, 16)).astype(np.uint8)
    b = a.copy()
    b[0, :4] = (b[0, :4] + 1) % 3
    assert agreement_miou(a, a, 3) == 1.0
    assert agreement_miou(a, b, 3) == pytest.approx(agreement_miou(b, a, 3))
    assert agreement_miou(a, b, 3) < 1.0


def test_boundary_band_matches_a_brute_force_chessboard_distance():
    """Brute force: a mask pixel is in the band when some non-mask pixel inside the image lies within
    ``width`` (chessboard distance); the image border itself is not a contour."""
    rng = np.random.default_rng(1)
    for trial in range(5):
        mask = rng.random((12, 15)) < 0.6
        for width in (1, 2, 3):
            expected = np.zeros_like(mask)
            for y, x in zip(*np.nonzero(mask)):
                window = mask[max(0, y - width):y + width + 1, max(0, x - width):x + width + 1]
                expected[y, x] = not window.all()
            np.testing.assert_array_equal(boundary_band(mask, width), expected, err_msg=f"trial {trial}, width {width}")
