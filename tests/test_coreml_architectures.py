"""Every registered architecture: the fp32 .mlpackage, run by the Linux reference interpreter,
matches PyTorch to <= 1e-3 relative error (issue: Core ML numerics on Linux)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseg.export.coreml_convert import convert_coreml
from edgeseg.models.registry import build_model, get_spec, names
from edgeseg.runtime.base import normalize_nhwc
from edgeseg.runtime.coreml_reference import CoreMLReferenceProgram

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


@pytest.mark.parametrize("arch", names())
def test_fp32_reference_matches_pytorch(arch, tmp_path):
    torch.manual_seed(0)
    size = 64
    model = build_model(arch, num_classes=3).eval()
    with torch.no_grad():  # random BN statistics so activations are not all near zero
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    convert_coreml(model, height=size, width=size, mean=MEAN, std=STD, labels=["a", "b", "c"], precision="fp32",
                   dest=tmp_path / "m.mlpackage", description=arch, metadata={})
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    ours = CoreMLReferenceProgram.load(tmp_path / "m.mlpackage").predict(images)
    with torch.no_grad():
        ref = model(torch.from_numpy(normalize_nhwc(images, MEAN, STD)).permute(0, 3, 1, 2)).numpy()
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 1e-3, (arch, rel, get_spec(arch).name)
