"""Console output helpers shared by commands (rich tables, progress, folded third-party output)."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import sys
import tempfile
from typing import IO, Iterator

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A reader closed stdout (``edgeseg models | head -1``): raise, so the CLI exits as a shell does for a
        process killed by SIGPIPE (rich's default exits 1, the code of a failed gate)."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


# Pipes and CI logs: tables at their full width (a log scrolls or wraps long lines; a cut-off cell helps nobody).
PIPE_WIDTH = 1000
_probe = _Console()
console = _probe if _probe.is_terminal else _Console(width=PIPE_WIDTH)

_BREAK_AFTER = re.compile(r"[^-_./\s]*(?:[-_./\s]+|$)")


class Cell:
    """A table cell that a narrow column breaks after ``- _ . /`` or a space instead of cutting it off, so a
    file name keeps its ``-int8.onnx`` readable; a part wider than the column folds. Plain text, no markup."""

    def __init__(self, text: str):
        self.text = text
        self.parts = [p for p in _BREAK_AFTER.findall(text) if p] or [""]

    def __rich_measure__(self, console: Console, options) -> Measurement:
        return Measurement(max(map(cell_len, self.parts)), cell_len(self.text)).with_maximum(options.max_width)

    def __rich_console__(self, console: Console, options):
        lines = [""]
        for part in self.parts:
            if lines[-1] and cell_len(lines[-1] + part.rstrip()) > options.max_width:
                lines.append("")
            lines[-1] += part
        yield Text("\n".join(line.rstrip() for line in lines), overflow="fold")


def print_table(title: str, header: list[str], rows: list[list], console_: Console | None = None) -> None:
    """Print rows as a rich table. Nothing is cut off: where the console is too narrow, headers wrap and cells
    break onto more lines (``Cell``)."""
    t = Table(title=title)
    for h in header:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*[Cell("" if v is None else str(v)) for v in r])
    (console_ or console).print(t)


@contextlib.contextmanager
def progress_bar(label: str, total: int, rate_unit: str | None = None):
    """A progress bar (hidden when not on a terminal); yields ``advance()``. ``rate_unit`` (e.g. "frames")
    adds a column with the rate per second."""
    from rich.progress import Progress, TextColumn

    columns = (*Progress.get_default_columns(), TextColumn(f"{{task.speed:.1f}} {rate_unit}/s" if rate_unit else ""))
    with Progress(*columns, console=console, disable=not console.is_terminal or total < 2) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


@contextlib.contextmanager
def folded_output(verbose: bool = False, keep: tuple[type[BaseException], ...] = ()) -> Iterator[IO[str]]:
    """Fold what third-party code prints (converter progress bars, library warnings, C++ logs) away from
    the user; yields the stream edgeseg's own progress lines go to.

    Both Python's ``sys.stdout`` / ``sys.stderr`` and the process's file descriptors 1 and 2 (where
    C++ libraries write) point at a temporary log inside the block. If the block raises anything but
    ``keep`` (edgeseg's own one-line errors, a failed gate, Ctrl-C), the log is replayed on stderr so
    an unexpected failure is not hidden. ``verbose``: nothing is folded.
    """
    if verbose:
        yield sys.stdout
        return
    out, err = sys.stdout, sys.stderr
    for stream in (out, err):
        stream.flush()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        real = _is_fd(out, 1)  # a real process stdout (not e.g. a test runner's buffer): fd 1 is folded too
        saved = (os.dup(1), os.dup(2))
        own = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace") if real else out
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        try:
            yield own
        except keep:
            raise
        except BaseException:
            _restore(out, err, saved, log)
            log.seek(0)
            err.write(log.read())
            err.flush()
            raise
        finally:
            _restore(out, err, saved, log)
            if real:
                own.close()


def _is_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _restore(out, err, saved: tuple[int, int], log) -> None:
    """Point stdout/stderr (objects and descriptors) back where they were; idempotent."""
    if sys.stdout is out and sys.stderr is err:
        return
    log.flush()
    sys.stdout, sys.stderr = out, err
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for fd in saved:
        os.close(fd)
