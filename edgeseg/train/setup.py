"""Turn a Recipe into model, data and preprocessing (layer 3)."""
from __future__ import annotations

import warnings
from pathlib import Path

from edgeseg.data.datasets import FileSource, class_list, open_source
from edgeseg.errors import CheckpointError, RecipeError
from edgeseg.models.checkpoint import ModelInfo, is_packaged, load_checkpoint, packaged_path
from edgeseg.models.registry import check_input_size, get_spec
from edgeseg.models.weights import is_weights_name, load_arch_weights
from edgeseg.recipe import Recipe


def open_splits(recipe: Recipe):
    """(train source, val source) for a recipe: ``data.root``'s, else the built-in synthetic set."""
    d = recipe.data
    root = d.root
    common = dict(classes=d.classes, task=d.task, size=d.input_size, val_fraction=d.val_fraction)
    if root is None:
        from edgeseg.data.datasets import SynthSource

        return (SynthSource(d.task, d.synth_train, d.input_size, d.seed * 2),
                SynthSource(d.task, d.synth_val, d.input_size, d.seed * 2 + 1))
    train = open_source(root, d.train_split, **common)
    val = open_source(root, d.val_split, **common)
    for src in (train, val):
        if isinstance(src, FileSource):
            src.validate()
    return train, val


def model_info(recipe: Recipe, classes: tuple[str, ...]) -> ModelInfo:
    """Architecture, classes and preprocessing for a recipe (mean/std default to the encoder's)."""
    spec = get_spec(recipe.model.arch)
    h, w = recipe.data.input_size
    check_input_size(spec, h, w)
    if recipe.data.classes and tuple(recipe.data.classes) != tuple(classes):
        raise RecipeError(f"data.classes {list(recipe.data.classes)} do not match the dataset's {list(classes)}")
    options = {**spec.options, **recipe.model.options()}
    return ModelInfo(
        name=recipe.name, arch=spec.name, options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        classes=tuple(classes), input_size=(h, w),
        mean=tuple(recipe.data.mean or spec.mean), std=tuple(recipe.data.std or spec.std),
    )


class RenamedClassesWarning(UserWarning):
    """Fine-tuning a checkpoint onto data whose classes have other names (``edgeseg train`` prints a ``warning:`` line)."""


def build_for_training(info: ModelInfo, weights: str | None):
    """The model for ``info``, with ``weights`` loaded when given: a local file, a packaged model ('default',
    'parts'; ``starting_weights``), or a name the libraries resolve and cache (``imagenet``,
    ``timm:<model>[.<tag>]``, ``torchvision:<Enum>.<member>``).

    An architecture's own option check (e.g. how many decoder_channels it needs) is a RecipeError.
    """
    try:
        model = info.build()
    except ValueError as exc:
        raise RecipeError(f"model options {info.options} do not fit {info.arch}: {exc}") from None
    if weights:
        load_arch_weights(model, starting_weights(weights, info.classes), get_spec(info.arch), info.options)
    return model


def starting_weights(weights: str, classes: tuple[str, ...]) -> str | Path:
    """Where ``weights`` are read from: a packaged model's name is its file. Fine-tuning an edgeseg checkpoint
    whose classes are as many as ``classes`` but named otherwise (or ordered otherwise) is legitimate (new
    classes for its outputs), and said with a RenamedClassesWarning; another count fails in the weight check."""
    if is_weights_name(weights):
        return weights
    path = packaged_path(weights) if is_packaged(weights) else Path(weights)
    try:
        before = load_checkpoint(path).info.classes
    except CheckpointError:  # not an edgeseg checkpoint (a plain state dict): its classes are unknown
        return path
    if len(before) == len(classes) and tuple(before) != tuple(classes):
        warnings.warn(RenamedClassesWarning(
            f"--weights {weights}: its outputs were the classes {class_list(before)}; fine-tuning makes them "
            f"{class_list(classes)} (the data's, in that order); if the data means the same classes, relabel it in the "
            "checkpoint's order instead"), stacklevel=2)
    return path
