"""Console output for long work: a rich progress bar on stderr, and tables rendered as plain text for stdout.

A command run as a stage of another (`rlaif quickstart`) has its stdout and stderr in a log file, with the libraries'
warnings and start-up notes; its parent passes the terminal as the file descriptor `RLAIF_CONSOLE_FD`, and the progress
bars draw there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

CONSOLE_FD = "RLAIF_CONSOLE_FD"


def _console() -> Console:
    """The terminal `RLAIF_CONSOLE_FD` names, else stderr. Taken out of the environment, so that the processes this
    one starts (engines, Ray workers), which do not have that descriptor, never write to whatever else has it."""
    with contextlib.suppress(KeyError, ValueError, OSError):
        return Console(file=os.fdopen(int(os.environ.pop(CONSOLE_FD)), "w", buffering=1, closefd=False))
    return Console(stderr=True)


stderr = _console()


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
