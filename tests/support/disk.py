"""A disk that stalls or fills up, for tests of what waits on writes (made by wrapping os.fsync), and a ticker that
shows whether an event loop kept running meanwhile."""

from __future__ import annotations

import asyncio
import errno
import os
import threading


def stall_fsync(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make every fsync hang until released (at most 5 s): (entered: an fsync has started, release)."""
    entered, release = threading.Event(), threading.Event()
    fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        entered.set()
        release.wait(timeout=5)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    return entered, release


def fill_disk(monkeypatch) -> None:
    """Make every fsync fail as on a full disk."""
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


class Ticker:
    """Counts 5 ms ticks of the running event loop: `start()` inside it, read `ticks`, `stop()`."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
