"""Console output helpers shared by commands (rich tables)."""
from __future__ import annotations

import contextlib

from rich.console import Console
from rich.table import Table

# Pipes and CI logs get a wide console so tables are not folded into unreadable columns.
_probe = Console()
console = _probe if _probe.is_terminal else Console(width=160)


def print_table(title: str, header: list[str], rows: list[list], console_: Console | None = None) -> None:
    """Print rows as a rich table."""
    t = Table(title=title)
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    (console_ or console).print(t)


@contextlib.contextmanager
def progress_bar(label: str, total: int):
    """A progress bar (hidden when not on a terminal); yields ``advance()``."""
    from rich.progress import Progress

    with Progress(console=console, disable=not console.is_terminal or total < 2) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
