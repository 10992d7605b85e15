"""The architecture table behind ``edgeseg models``."""
from __future__ import annotations

from edgeseg.models.profile import count_macs, count_params
from edgeseg.models.registry import build_model, get_spec, names


def model_table(num_classes: int = 2) -> list[dict]:
    """One row per registered architecture: params, MACs and input at its default size."""
    rows = []
    for name in names():
        spec = get_spec(name)
        model = build_model(name, num_classes=num_classes)
        h, w = spec.default_size
        rows.append({"name": name, "params": count_params(model), "macs": count_macs(model, h, w),
                     "input": [h, w], "stride": spec.stride, "description": spec.description})
    return rows
