"""Package a trained checkpoint as one of the shipped models (fp16 weights, a few hundred KB).

    python scripts/package_default.py runs/portrait_default_ft4/best.pt            # the default portrait model
    python scripts/package_default.py --as parts runs/parts_ft/best.pt             # the try-on parts model
    python scripts/package_default.py --name NAME CHECKPOINT   # record another model name (its files' stem)

Re-evaluates the fp16-stored weights on the built-in synthetic eval set of the model's classes and
records those metrics and the reproduction command in the packaged checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses

from edgeseg.data.datasets import builtin_source
from edgeseg.evaluation.accumulate import evaluate
from edgeseg.models.checkpoint import PACKAGED, load_checkpoint, save_checkpoint
from edgeseg.runtime.loader import synth_task_for
from edgeseg.runtime.torch_runner import TorchRunner

TRAIN_COMMANDS = {
    "default": "make train-default  # seven training stages of recipes/portrait_unet_mnv3min_s2_256.yaml, see Makefile",
    "parts": "make train-parts  # training stages of recipes/parts_unet_256.yaml, see Makefile",
}
EVAL_IMAGES = 200


def package(src: str, name: str = "default", model_name: str | None = None) -> dict:
    """Write ``PACKAGED[name]`` from ``src``; returns the recorded metrics. ``model_name`` replaces the
    model's name (the stem of its exported files; a run trained from a recipe file since renamed)."""
    dest = PACKAGED[name]
    ckpt = load_checkpoint(src)
    if model_name:
        ckpt.info = dataclasses.replace(ckpt.info, name=model_name)
        ckpt.recipe = {**ckpt.recipe, "name": model_name}
    task = synth_task_for(ckpt.info.classes)
    if task is None:
        raise SystemExit(f"{src}: its classes {ckpt.info.classes} match no built-in synthetic set to evaluate on")
    save_checkpoint(dest, ckpt.model(), ckpt.info, recipe=ckpt.recipe, half=True, metrics={})
    shipped = load_checkpoint(dest)  # evaluate exactly what ships (fp16-rounded weights)
    info = shipped.info
    runner = TorchRunner(shipped.model(), input_size=info.input_size, mean=info.mean, std=info.std)
    source = builtin_source("eval", task, EVAL_IMAGES, info.input_size)
    metrics = evaluate(runner.run, source, info.input_size, info.classes).summary()
    metrics.update(eval_set=f"built-in synthetic {task} eval set ({EVAL_IMAGES} images, seed 12345)",
                   train_command=TRAIN_COMMANDS[name], train_val=ckpt.metrics)
    save_checkpoint(dest, shipped.model(), info, recipe=ckpt.recipe, half=True, metrics=metrics)
    return metrics


if __name__ == "__main__":
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--as", dest="name", choices=sorted(PACKAGED), default="default")
    parser.add_argument("--name", dest="model_name", help="the model's name (its exported files' stem) [the run's]")
    args = parser.parse_args()
    print(json.dumps(package(args.checkpoint, args.name, args.model_name), indent=2))
