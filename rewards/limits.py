"""Async rate limiting of one provider's calls: concurrency, requests per minute, tokens per minute.

`RateLimiter.slot(tokens)` is an async context manager: it waits until a call may start, then holds one
of `concurrency` slots for the body of the `async with`. A call may start when all of these hold:

- fewer than `concurrency` calls are in flight;
- the requests bucket has a whole request (only with `rpm`);
- the tokens bucket holds `tokens`, the call's estimated tokens (only with `tpm`);
- the time given to `pause_until` (a provider's retry-after) has passed.

Buckets refill continuously: the requests bucket at rpm/60 per second up to a capacity of
`rpm / 60 * burst_s` requests (at least 1), the tokens bucket at tpm/60 per second up to
`tpm / 60 * burst_s` tokens (at least 1). `burst_s` is 1.0 by default: a limiter that sat idle lets one
second's worth of calls start at once, then paces them at the steady rate. Both buckets start full.
`None` for `rpm` or `tpm` means no such limit.

A call estimating more tokens than the tokens bucket holds when full is still allowed, once the bucket
is full: it drives the bucket negative and later calls wait for the refill (no deadlock, and the long-run
rate stays at tpm). `record(estimated, actual)` corrects the bucket after a call by the difference, so it
too can go negative; an overestimate is credited back, up to the capacity.

Fairness: waiters pass one at a time through an asyncio.Lock, which serves them in arrival order; the
waiter at the head takes a concurrency slot, then waits for the buckets, then takes from both at once.
A waiter cancelled while waiting gives back exactly what it took (at most the concurrency slot, never
bucket contents, which are taken only when the call starts).

Times are `time.monotonic()` seconds. One limiter belongs to one event loop (the asyncio primitives bind
to the loop that first waits on them) and is not thread-safe; `record` and `pause_until` are plain calls
made from that loop. `in_flight` counts calls inside their `async with` block; `waited_s` totals the
seconds callers spent in `slot` before their call started (cancelled waiters included), for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

# Float slack when comparing bucket levels, so rounding never leaves a waiter sleeping for ~0 s in a loop.
_EPS = 1e-9


class _Bucket:
    """A token bucket with continuous refill; the level may go negative (debt repaid by the refill)."""

    def __init__(self, per_s: float, capacity: float) -> None:
        self.per_s = per_s
        self.capacity = capacity
        self.level = capacity
        self._t = time.monotonic()

    def refill(self, now: float) -> None:
        if now > self._t:
            self.level = min(self.capacity, self.level + (now - self._t) * self.per_s)
            self._t = now

    def delay(self, amount: float, now: float) -> float:
        """Seconds from `now` until `amount` may be taken (an amount above the capacity needs a full bucket)."""
        self.refill(now)
        need = min(amount, self.capacity)
        if self.level + _EPS >= need:
            return 0.0
        return (need - self.level) / self.per_s

    def take(self, amount: float) -> None:
        self.level -= amount

    def adjust(self, delta: float, now: float) -> None:
        """Take `delta` more (or give back `-delta`, up to the capacity)."""
        self.refill(now)
        self.level = min(self.capacity, self.level - delta)


class RateLimiter:
    """Concurrency, requests-per-minute and tokens-per-minute limits for one provider (see module docstring)."""

    def __init__(
        self,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst_s: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if rpm is not None and not rpm > 0:
            raise ValueError(f"rpm must be > 0 or None, got {rpm}")
        if tpm is not None and not tpm > 0:
            raise ValueError(f"tpm must be > 0 or None, got {tpm}")
        if not burst_s > 0:
            raise ValueError(f"burst_s must be > 0, got {burst_s}")
        self.concurrency = concurrency
        self.rpm = rpm
        self.tpm = tpm
        self._requests = None if rpm is None else _Bucket(rpm / 60, max(1.0, rpm / 60 * burst_s))
        self._tokens = None if tpm is None else _Bucket(tpm / 60, max(1.0, tpm / 60 * burst_s))
        self._slots = asyncio.Semaphore(concurrency)
        self._queue = asyncio.Lock()
        self._paused_until = 0.0
        self._in_flight = 0
        self._waited_s = 0.0

    @property
    def in_flight(self) -> int:
        """Calls inside their `slot` block now."""
        return self._in_flight

    @property
    def waited_s(self) -> float:
        """Total seconds callers spent waiting in `slot` before starting."""
        return self._waited_s

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        """Wait until a call estimating `tokens` tokens may start, then hold a concurrency slot for the block."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        start = time.monotonic()
        try:
            async with self._queue:
                await self._slots.acquire()
                try:
                    await self._wait_for_buckets(tokens)
                except BaseException:
                    self._slots.release()
                    raise
        finally:
            self._waited_s += time.monotonic() - start
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._slots.release()

    async def _wait_for_buckets(self, tokens: int) -> None:
        """Sleep until the pause is over and both buckets can give, then take from both (no await after)."""
        while True:
            now = time.monotonic()
            delay = self._paused_until - now
            if self._requests is not None:
                delay = max(delay, self._requests.delay(1, now))
            if self._tokens is not None:
                delay = max(delay, self._tokens.delay(tokens, now))
            if delay <= 0:
                break
            # Re-check after sleeping: record() or pause_until() may have changed things meanwhile.
            await asyncio.sleep(delay)
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(tokens)

    def record(self, estimated: int, actual: int) -> None:
        """After a call, correct the tokens bucket by `actual - estimated` (no-op without `tpm`)."""
        if self._tokens is not None:
            self._tokens.adjust(actual - estimated, time.monotonic())

    def pause_until(self, monotonic_deadline: float) -> None:
        """Start no new call before `monotonic_deadline` (a `time.monotonic()` time); calls in flight go on.

        An earlier deadline than one already set does not shorten the pause.
        """
        self._paused_until = max(self._paused_until, monotonic_deadline)
