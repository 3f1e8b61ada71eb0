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


def _console() -> tuple[Console, bool]:
    """The terminal `RLAIF_CONSOLE_FD` names, else stderr; and whether it is that terminal. Taken out of the
    environment, so that the processes this one starts (engines, Ray workers), which do not have that descriptor,
    never write to whatever else has it."""
    with contextlib.suppress(KeyError, ValueError, OSError):
        return Console(file=os.fdopen(int(os.environ.pop(CONSOLE_FD)), "w", buffering=1, closefd=False)), True
    return Console(stderr=True), False


stderr, _staged = _console()


def make_bar(*status: TextColumn) -> Progress:
    """A progress bar on `stderr`: description, bar, done/total, time, then any `status` columns. Run as a stage,
    what the libraries print meanwhile stays in the stage's log; else it prints above the bar."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), *status,
                    console=stderr, redirect_stdout=not _staged, redirect_stderr=not _staged)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    with make_bar() as bar:
        task = bar.add_task(description, total=total)
        yield lambda *_: bar.advance(task)


def render(renderable: object, width: int = 120) -> str:
    """A rich table (or any renderable) as plain text, for stdout."""
    console = Console(width=width, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().rstrip()
