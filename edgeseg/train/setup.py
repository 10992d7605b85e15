"""Turn a Recipe into model, data and preprocessing (layer 3)."""
from __future__ import annotations

import warnings
from pathlib import Path

from edgeseg.data.datasets import FileSource, class_list, open_source
from edgeseg.errors import CheckpointError, RecipeError
from edgeseg.models.checkpoint import ModelInfo, is_packaged, load_checkpoint, packaged_path
from edgeseg.models.registry import check_input_size, get_spec
from edgeseg.models.weights import is_weights_name, load_arch_weights
from edgeseg.recipe import Recipe, recipe_with


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
    """Architecture, classes and preprocessing for a recipe (mean/std default to the encoder's; a run starting from
    an edgeseg checkpoint has them set to the checkpoint's by ``weights_normalization`` first)."""
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


class TrainWarning(UserWarning):
    """What ``edgeseg train`` prints as a ``warning:`` line (the CLI catches this category)."""


class RenamedClassesWarning(TrainWarning):
    """Fine-tuning a checkpoint onto data whose classes have other names (``edgeseg train`` prints a ``warning:`` line)."""


class NormalizationWarning(TrainWarning):
    """Fine-tuning a checkpoint with a data.mean/data.std other than the one it was trained with."""


def _shown(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def weights_normalization(recipe: Recipe) -> tuple[Recipe, str]:
    """``recipe`` with the mean/std its starting weights were trained with, and a line saying so ('' when none).

    When ``model.weights`` is an edgeseg checkpoint (a packaged model's name, or a file carrying edgeseg's
    checkpoint marker), each of data.mean/data.std the recipe leaves unset is set to the checkpoint's: the
    packaged default takes (pixel - 114) / 58 on every channel, and ImageNet's per-channel values in its place
    would feed its first layer other inputs (and cost its int8 files their integer-only input). One the recipe
    sets to other values is kept, with a NormalizationWarning. Other weights (named, a plain state dict, or a file
    that cannot be read, refused later by ``build_for_training``) leave the recipe as it is.
    """
    weights = recipe.model.weights
    if not weights or is_weights_name(weights):
        return recipe, ""
    try:
        info = load_checkpoint(packaged_path(weights) if is_packaged(weights) else Path(weights)).info
    except CheckpointError:
        return recipe, ""
    fields = (("data.mean", recipe.data.mean, info.mean), ("data.std", recipe.data.std, info.std))
    unset = [(key, value) for key, given, value in fields if given is None]
    differ = [f"{key} {_shown(given)}" for key, given, value in fields
              if given is not None and tuple(map(float, given)) != tuple(map(float, value))]
    trained = f"mean {_shown(info.mean)}, std {_shown(info.std)}"
    if differ:
        warnings.warn(NormalizationWarning(
            f"--weights {weights} was trained with {trained} (0-255 pixel units) but the recipe sets "
            f"{' and '.join(differ)}: fine-tuning starts from inputs the weights were not trained on; leave "
            "data.mean/data.std unset to keep the weights' own"), stacklevel=2)
    if not unset:
        return recipe, ""
    keys = " and ".join(key for key, _ in unset)
    return (recipe_with(recipe.to_dict(), [(key, list(value)) for key, value in unset]),
            f"note: --weights {weights} was trained with {trained} (0-255 pixel units); the recipe sets no {keys}, "
            f"so fine-tuning uses the weights' own")


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
