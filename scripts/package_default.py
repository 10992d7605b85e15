"""Package a trained checkpoint as the shipped default model (fp16 weights, a few hundred KB).

    python scripts/package_default.py runs/portrait_default/best.pt

Re-evaluates the fp16-stored weights on the built-in synthetic eval set and records those
metrics and the reproduction command in the packaged checkpoint.
"""
from __future__ import annotations

import sys

from edgeseg.data.datasets import builtin_source
from edgeseg.models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint
from edgeseg.evaluation.accumulate import evaluate
from edgeseg.runtime.torch_runner import TorchRunner

TRAIN_COMMAND = "make train-default  # five training stages of recipes/portrait_unet_mnv3min_s4_256.yaml, see Makefile"
EVAL_IMAGES = 200


def package(src: str) -> dict:
    """Write DEFAULT_CHECKPOINT from ``src``; returns the recorded metrics."""
    ckpt = load_checkpoint(src)
    save_checkpoint(DEFAULT_CHECKPOINT, ckpt.model(), ckpt.info, recipe=ckpt.recipe, half=True, metrics={})
    shipped = load_checkpoint(DEFAULT_CHECKPOINT)  # evaluate exactly what ships (fp16-rounded weights)
    info = shipped.info
    runner = TorchRunner(shipped.model(), input_size=info.input_size, mean=info.mean, std=info.std)
    source = builtin_source("eval", "portrait", EVAL_IMAGES, info.input_size)
    metrics = evaluate(runner.run, source, info.input_size, info.classes).summary()
    metrics.update(eval_set=f"built-in synthetic portrait eval set ({EVAL_IMAGES} images, seed 12345)",
                   train_command=TRAIN_COMMAND, train_val=ckpt.metrics)
    save_checkpoint(DEFAULT_CHECKPOINT, shipped.model(), info, recipe=ckpt.recipe, half=True, metrics=metrics)
    return metrics


if __name__ == "__main__":
    import json

    print(json.dumps(package(sys.argv[1]), indent=2))
