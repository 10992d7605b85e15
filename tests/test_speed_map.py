"""benchmarks/speed_map.py's candidates: each builds (timm's MobileNetV4 generator included) and is a segmenter."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from speed_map import CANDIDATES, build  # noqa: E402

from edgeseg.models.profile import count_params  # noqa: E402


def test_every_candidate_builds_a_two_class_segmenter_with_random_batchnorm_statistics():
    params = {}
    for i, (name, (arch, options)) in enumerate(CANDIDATES.items()):
        model = build(arch, options, seed=i)
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 64))
        assert out.shape == (1, 2, 64, 64), name
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var)), name  # drawn, not the init's 1s
        params[name] = count_params(model)
    # timm's generator honours the channel multiplier: 0.5 (zoo) < 0.625 < 0.75 < 1.0 (zoo)
    assert params["v4s050_s4"] < params["v4s0625_s4"] < params["v4s075_s4"] < params["v4s100_s4"]
    assert params["v4s0625_s8"] < params["v4s0625_s4"] < params["v4s0625_s2"]  # a longer decoder adds weights
