"""Console output for long work: a rich progress bar on stderr, and tables rendered as plain text for stdout."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

stderr = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda *_: bar.advance(task)


def render(renderable: object, width: int = 120) -> str:
    """A rich table (or any renderable) as plain text, for stdout."""
    console = Console(width=width, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().rstrip()
