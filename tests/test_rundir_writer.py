"""The run directory's writer thread: the event loop never waits on a write, the writes land in order, a failed
write is raised, never lost. A slow disk is made by wrapping os.fsync."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from rlaif.errors import RlaifError
from rlaif.train.rundir import RunDir
from tests.support.disk import Ticker, fill_disk, stall_fsync

pytestmark = pytest.mark.unit
CONFIG = "model:\n  path: models/tiny\n"


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_slow_fsync_leaves_the_event_loop_running_and_the_writes_land_in_order(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    entered, release = stall_fsync(monkeypatch)

    async def loop() -> tuple[float, int, bool]:
        ticker = Ticker()
        ticker.start()
        started = time.monotonic()
        for i in range(5):
            run.append_trajectories([{"id": i}])
            run.log_metrics(i, {"reward/mean": float(i)})
        handing_over_s = time.monotonic() - started
        while not entered.is_set():
            await asyncio.sleep(0.005)
        before = ticker.ticks
        await asyncio.sleep(0.1)
        file = run.path / "trajectories.jsonl"
        pending = (file.stat().st_size if file.exists() else 0) < run.offsets()["trajectories.jsonl"]
        release.set()
        ticker.stop()
        return handing_over_s, ticker.ticks - before, pending

    handing_over_s, ticks, pending = asyncio.run(loop())
    run.close()
    assert handing_over_s < 1.0, "the writes were made on the event loop"
    assert pending and ticks >= 5, (pending, ticks)  # the loop ran while a write was still not on disk
    assert _lines(run.path / "trajectories.jsonl") == [{"id": i} for i in range(5)]
    assert [line["step"] for line in _lines(run.path / "metrics.jsonl")] == list(range(5))
    assert run.offsets() == {name: (run.path / name).stat().st_size for name in run.offsets()}


def test_a_failed_write_is_raised_by_the_next_call_and_nothing_is_written_after_it(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    fill_disk(monkeypatch)
    run.append_trajectories([{"id": 0}])  # handed over: fails on the writer thread
    with pytest.raises(RlaifError):
        run.after_writes(lambda: None).result()
    monkeypatch.undo()  # the disk has room again; the writer stays stopped
    with pytest.raises(RlaifError, match=r"No space left on device.*rlaif train --resume"):
        run.append_trajectories([{"id": 1}])
    run.close()  # raised once already: not again
    assert b'"id": 1' not in (run.path / "trajectories.jsonl").read_bytes()


def test_a_failed_write_that_no_call_saw_is_raised_by_close(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path, "grpo", CONFIG)
    fill_disk(monkeypatch)
    run.append_trajectories([{"id": 0}])
    with pytest.raises(RlaifError, match="No space left on device"):
        run.close()
