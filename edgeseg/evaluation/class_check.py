"""Whether a dataset's labels mean what a model's outputs mean: its class list against the model's (layer 3)."""
from __future__ import annotations

from pathlib import Path

from edgeseg.data.datasets import read_classes
from edgeseg.errors import DataError


def shown(classes) -> str:
    """A class list in one line, in order: ``[background, person]``."""
    return f"[{', '.join(classes)}]"


def check_data_classes(root: str | Path, classes, model: str) -> None:
    """DataError (exit 2) when the dataset folder ``root`` lists classes (its classes.txt, as the data layer
    reads it) other than ``classes``, the classes of ``model`` in order: label k would be scored as the model's
    class k, which names something else. A folder without a class list is taken as labelled with ``classes``."""
    listed = read_classes(Path(root))
    if listed is None or tuple(listed) == tuple(classes):
        return
    raise DataError(f"{Path(root) / 'classes.txt'} lists the classes {shown(listed)} but {model} predicts "
                    f"{shown(classes)} (in that order); relabel the data with the model's classes, or fine-tune the "
                    f"model on it (edgeseg train --weights MODEL --data {root})")
