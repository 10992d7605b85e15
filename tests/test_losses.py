"""The training loss: cross-entropy (weighted up in the Boundary IoU band on request) plus soft Dice."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg.metrics import IGNORE_INDEX, band_width, boundary_band as metric_band
from edgeseg.train.losses import SegLoss, boundary_band


def _scene() -> torch.Tensor:
    target = torch.zeros(2, 48, 40, dtype=torch.long)
    target[0, 10:30, 12:28] = 1
    target[1, 20:, :] = 2
    target[1, 5:8, 5:9] = IGNORE_INDEX
    return target


def test_boundary_band_is_the_band_boundary_iou_scores():
    target = _scene()
    radius = band_width(48, 40)
    band = boundary_band(target, 3, radius).numpy()
    for i, t in enumerate(target.numpy()):
        valid = t != IGNORE_INDEX
        # the metric's band of each class, away from ignore pixels (ignore is not a class boundary)
        near_ignore = metric_band(~valid, radius + 1) | metric_band(valid, radius)
        expected = np.any([metric_band(t == c, radius) for c in range(3)], axis=0) & valid
        assert band[i][~near_ignore].tolist() == expected[~near_ignore].tolist()
        assert band[i].any() and not band[i][~valid].any()


def test_boundary_weight_zero_is_plain_ce_plus_dice_and_weight_puts_edge_errors_first():
    torch.manual_seed(0)
    target = _scene()
    logits = torch.randn(2, 3, 48, 40)
    plain = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    assert torch.allclose(SegLoss(dice_weight=0.0)(logits, target), plain)
    assert torch.allclose(SegLoss(dice_weight=0.0, boundary_weight=1e-9)(logits, target), plain, atol=1e-6)

    band = boundary_band(target, 3, band_width(48, 40))
    good = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 8  # a confident, right prediction
    edge_wrong, inner_wrong = good.clone(), good.clone()
    inner = (~band) & (target != IGNORE_INDEX)
    for wrong, where in ((edge_wrong, band), (inner_wrong, inner)):  # the same number of wrong pixels
        idx = where.nonzero()[:100]
        wrong[idx[:, 0], :, idx[:, 1], idx[:, 2]] = wrong[idx[:, 0], :, idx[:, 1], idx[:, 2]].roll(1, -1)
    unweighted, weighted = SegLoss(0.0), SegLoss(0.0, boundary_weight=4.0)
    assert torch.isclose(unweighted(edge_wrong, target), unweighted(inner_wrong, target), rtol=1e-3)
    assert weighted(edge_wrong, target) > 1.5 * weighted(inner_wrong, target)
