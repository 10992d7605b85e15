"""What a resumed run continues: the run as it was started, from its last.pt (layer 3).

A run's settings are the recipe stored in its last.pt (the recipe file with the ``--set`` overrides
and the data folder the run was started with). Settings given again on ``--resume`` must agree with
it, except ``RESUME_MAY_CHANGE``; ``model.weights`` is not compared (a resumed run's weights come
from last.pt, the starting weights are neither read nor downloaded), nor are data.root, data.mean and
data.std left unset. ``edgeseg train --resume`` compares every setting of a ``--recipe`` it is given (so
another recipe is refused, naming the differences); without one it goes on with the stored recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from edgeseg.errors import CheckpointError, EdgesegError, RecipeError
from edgeseg.models.checkpoint import Checkpoint, load_checkpoint
from edgeseg.recipe import Recipe, parse_override, recipe_fields, recipe_with

#: settings a resumed run takes as given now: how long it trains (train.epochs: more extends the run, its
#: cosine schedule stretched to the new length), where it runs (train.device, train.workers), and where its
#: data folder lives now (data.root, i.e. --data: a moved or copied dataset; not from or to the built-in set)
RESUME_MAY_CHANGE = ("train.epochs", "train.device", "train.workers", "data.root")
#: train_state key of a last.pt whose stored recipe names the run's data folder (data.root None: the built-in set);
#: runs from before it stored data.root None whatever they trained on
DATA_ROOT_RECORDED = "data_root_recorded"
MAX_SHOWN = 6  # differing settings a refused resume names (then "and N more")


def resume_point(path: Path) -> Checkpoint:
    """The last.pt a run resumes from; CheckpointError when there is none, or it holds no training state or recipe."""
    if not path.is_file():
        raise CheckpointError(f"--resume: no {path} to resume from")
    ckpt = load_checkpoint(path)
    if not ckpt.train_state:
        raise CheckpointError(f"{path}: has no training state to resume")
    if not ckpt.recipe:
        raise CheckpointError(f"{path}: holds no recipe, so the run it continues is unknown; start a new run from "
                              f"its weights with --weights {path} --out NEW_DIR")
    return ckpt


def stored_recipe(ckpt: Checkpoint, overrides: Iterable[str]) -> Recipe:
    """The recipe stored in ``ckpt`` (a run's last.pt) with the ``a.b=v`` ``overrides`` set on top: what a resume
    without a recipe file continues (``resumed_recipe`` then checks the overrides against the run)."""
    try:
        return recipe_with(ckpt.recipe, [parse_override(text) for text in overrides])
    except RecipeError as exc:
        raise RecipeError(f"--resume: {ckpt.path}: the run's recipe with the --set options: {exc}") from None


def given_keys(overrides: Iterable[str] | None, data_root: str | None) -> tuple[str, ...] | None:
    """The recipe keys a command sets on top of its recipe file (``a.b=v`` overrides, --data as data.root);
    None when unknown (a Python caller passing only a Recipe: all of its fields count as given)."""
    if overrides is None:
        return None
    return tuple(parse_override(text)[0] for text in overrides) + (("data.root",) if data_root is not None else ())


def resumed_recipe(ckpt: Checkpoint, given: Recipe, keys: tuple[str, ...] | None, data_given: bool = True) -> Recipe:
    """The recipe a resumed run goes on with: the one stored in ``ckpt`` with the ``RESUME_MAY_CHANGE`` settings of
    ``given`` applied; ``keys``: which fields of ``given`` were given (None: all); ``data_given``: False when
    ``given``'s data.root comes from a recipe file rather than --data (then it must match the run's).

    RecipeError naming every other given field whose value differs from the run's, and the fix; EdgesegError
    when train.epochs is below the epochs already trained.
    """
    values = dict(recipe_fields(given))
    if keys is not None:
        values = {k: v for k, v in values.items() if any(k == g or k.startswith(g + ".") for g in keys)}
    values.pop("model.weights", None)
    for key in ("data.root", "data.mean", "data.std"):
        if values.get(key, 0) is None:  # not set: the run's own data folder, and the normalization it started with
            values.pop(key)              # (a run from an edgeseg checkpoint records that checkpoint's mean/std)
    data = ckpt.recipe.get("data")
    stored_root = data.get("root") if isinstance(data, dict) else None
    if ckpt.train_state.get(DATA_ROOT_RECORDED):
        # a whole recipe given again (keys None) moves the run to another data folder only through --data: the
        # recipe file's data.root is compared like any other field (a relative one may mean another folder now)
        changes = [(k, v) for k, v in values.items()
                   if k in RESUME_MAY_CHANGE and not (k == "data.root" and (stored_root is None or not data_given))]
    else:  # an older run: its data is what this command names (--data, the recipe file's data.root, else the
        # built-in set), as resuming took it before runs recorded their data
        values.pop("data.root", None)
        changes = [(k, v) for k, v in values.items() if k in RESUME_MAY_CHANGE] + [("data.root", given.data.root)]
    try:
        run = recipe_with(ckpt.recipe, changes)
    except RecipeError as exc:
        raise RecipeError(f"--resume: {ckpt.path}: the run's {exc}") from None
    now = dict(recipe_fields(run))
    differ = [k for k, v in values.items() if v != now[k]]
    if differ:
        shown = ", ".join(f"{k}={_show(values[k])} (the run has {_show(now[k])})" for k in differ[:MAX_SHOWN])
        more = f" and {len(differ) - MAX_SHOWN} more" if len(differ) > MAX_SHOWN else ""
        own = " (without --recipe, the run goes on with its own recipe)" if keys is None else ""
        raise RecipeError(f"--resume goes on with the settings {ckpt.path} was started with, and these differ from "
                          f"them: {shown}{more}; leave them out{own}, or train into a new --out to use them (on resume "
                          f"only {', '.join(RESUME_MAY_CHANGE[:-1])} and --data may change)")
    done = int(ckpt.train_state["epoch"])
    if run.train.epochs < done:
        raise EdgesegError(f"--resume: train.epochs={run.train.epochs} but the run in {ckpt.path.parent} has already "
                           f"trained {done} epochs; give train.epochs above {done} to train it further")
    return run


def _show(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
