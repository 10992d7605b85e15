"""Error types that the CLI maps to exit codes (layer 1: imports nothing from edgeseg).

``EdgesegError`` and subclasses mean bad usage or bad input: the CLI prints their message on
one line and exits 2. ``GateFailed`` (and ``ParityFailed``) mean the checks ran and did not
pass: exit 1. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class EdgesegError(Exception):
    """Bad usage or bad input. The message names the file or field and the problem."""

    exit_code = 2


class DataError(EdgesegError):
    """An image, mask or dataset layout that cannot be used."""


class RecipeError(EdgesegError):
    """A recipe key or value that is wrong."""


class CheckpointError(EdgesegError):
    """A checkpoint or weights file that is missing, corrupt or not ours."""


class ArtifactError(EdgesegError):
    """An exported model file that is missing, truncated or not understood."""


class GateFailed(Exception):
    """Checks ran and did not pass: a parity or latency gate (the CLI prints ``FAILED: ...`` and exits 1).

    Not an EdgesegError: the input was fine, the model (or its files) fell short.
    """

    exit_code = 1


class ParityFailed(GateFailed):
    """An export finished but some files are below their parity threshold.

    Every file is kept and listed in ``manifest`` (the manifest written to the export directory);
    the failing entries have ``parity.passed`` False.
    """

    def __init__(self, message: str, manifest=None):
        super().__init__(message)
        self.manifest = manifest


class MissingExtra(EdgesegError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, module: str, extra: str, why: str = ""):
        hint = f"pip install 'edgeseg[{extra}]'"
        super().__init__(f"{why + ': ' if why else ''}python module '{module}' is not installed; install it with {hint}")
        self.module = module
        self.extra = extra


def require(module: str, extra: str, why: str = ""):
    """Import ``module`` or raise MissingExtra naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via tests that hide modules
        raise MissingExtra(module, extra, why) from exc
