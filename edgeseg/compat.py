"""Known, harmless third-party log noise, filtered by exact message (layer 1).

Only specific messages from specific loggers are dropped; nothing is silenced globally.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import tempfile
import threading
from typing import Iterator

from edgeseg.errors import require

# coremltools logs these at import on Linux, where its native prediction library does not
# exist by design (edgeseg uses its own reference runner there). They would break the
# one-line error contract of the CLI.
_COREMLTOOLS_NATIVE = ("Failed to load _MLModelProxy", "Failed to load _MLModelAssetProxy", "Failed to load _MLCPUComputeDeviceProxy",
                       "Failed to load _MLGPUComputeDeviceProxy", "Failed to load _MLNeuralEngineComputeDeviceProxy",
                       "Failed to load _MLComputePlanProxy")


# torch logs this (logger torch.utils._pytree) when torchao, imported by executorch, registers an Enum
# as a pytree constant: a deprecation notice about torchao's code, on stderr of every ExecuTorch command.
_PYTREE_ENUM_NOTICE = ("<enum 'KernelPreference'> is an Enum subclass and is now natively supported",)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def _add_filter(logger_name: str, prefixes: tuple[str, ...]) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessages) and f.prefixes == prefixes for f in logger.filters):
        logger.addFilter(_DropMessages(prefixes))


def install_log_filters() -> None:
    """Drop coremltools' 'native library missing' messages off macOS, and torch's notice about torchao's
    Enum (idempotent)."""
    _add_filter("torch.utils._pytree", _PYTREE_ENUM_NOTICE)
    if platform.system() != "Darwin":
        _add_filter("coremltools", _COREMLTOOLS_NATIVE)


# LiteRT's C++ runtime prints this to stderr (once per process) when it makes its first interpreter; it
# lands in the middle of edgeseg's tables and JSON-reading scripts' stderr.
_LITERT_NOTICES = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


# File descriptor 2 belongs to the process: one thread at a time may point it elsewhere (two overlapping
# blocks would restore it out of order and lose stderr for good).
_FD2_LOCK = threading.RLock()


@contextlib.contextmanager
def native_notices_dropped(notices: tuple[bytes, ...] = _LITERT_NOTICES) -> Iterator[None]:
    """Within the block, what native code writes to file descriptor 2 is held back, then written to it
    again without the lines that are exactly one of ``notices``: everything else (errors included) still
    shows, after the block. Blocks in several threads run one at a time."""
    with _FD2_LOCK:
        yield from _notices_dropped(notices)


def _notices_dropped(notices: tuple[bytes, ...]) -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if line.rstrip(b"\r\n") not in notices]
            if kept:
                os.write(2, b"".join(kept))


def import_coremltools(why: str):
    """The ``coremltools`` module, imported without the notices its import logs to stderr: its untested
    scikit-learn and torch versions (held back by its logger's level during this import only), the
    native library missing off macOS and torch's notice about torchao (``install_log_filters``).
    Errors still show. MissingExtra naming ``edgeseg[coreml]`` when it is not installed."""
    install_log_filters()
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return require("coremltools", "coreml", why)
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def loggers_quiet_below_error(*names: str) -> Iterator[None]:
    """Within the block, the named loggers (and their children) pass only errors: e.g. huggingface_hub's
    warning for each retry of a download that cannot succeed offline, printed before edgeseg's one-line error."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
