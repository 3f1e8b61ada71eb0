"""The judge's infrastructure: verdict cache, per-provider rate limiter, price table and spend budget."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
import threading
import time

import pytest

from rlaif.errors import RlaifError
from rlaif_rewards.cache import CacheError, VerdictCache, cache_key
from rlaif_rewards.cost import BudgetExhausted, Price, SpendBudget, cost_usd
from rlaif_rewards.limits import RateLimiter

pytestmark = pytest.mark.unit

VERDICT = {
    "score": 0.75,
    "criteria": {"correct": 1.0, "concise": 0.5},
    "rationale": "States the return value for every input; four sentences where three were asked.",
}


# ---------------------------------------------------------------------------------------------- cache


def test_cache_key_is_canonical_and_covers_all_parts():
    prompt = [{"role": "user", "content": "Grade this: é"}]
    base = cache_key("anthropic", "claude", prompt, {"temperature": 0.0, "max_tokens": 64}, "1")
    canonical = json.dumps(
        {"provider": "anthropic", "model": "claude", "prompt": prompt,
         "sampling": {"temperature": 0.0, "max_tokens": 64}, "rubric_version": "1"},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    assert base == hashlib.sha256(canonical.encode()).hexdigest()
    # Key order inside dicts does not matter.
    assert base == cache_key("anthropic", "claude", prompt, {"max_tokens": 64, "temperature": 0.0}, "1")
    variants = [
        cache_key("openai", "claude", prompt, {"temperature": 0.0, "max_tokens": 64}, "1"),
        cache_key("anthropic", "claude-2", prompt, {"temperature": 0.0, "max_tokens": 64}, "1"),
        cache_key("anthropic", "claude", "Grade this: é", {"temperature": 0.0, "max_tokens": 64}, "1"),
        cache_key("anthropic", "claude", prompt, {"temperature": 0.5, "max_tokens": 64}, "1"),
        cache_key("anthropic", "claude", prompt, {"temperature": 0.0, "max_tokens": 64}, "2"),
        cache_key("anthropic", "claude", prompt, {"temperature": 0.0, "max_tokens": 64}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_memory_cache_round_trip_counts_and_copies():
    cache = VerdictCache(None)
    assert cache.get("k") is None
    cache.put("k", VERDICT)
    got = cache.get("k")
    assert got == VERDICT
    got["score"] = 0.0  # callers may mutate what they get
    assert cache.get("k") == VERDICT
    assert (cache.hits, cache.misses) == (2, 1)
    with pytest.raises(TypeError):
        cache.put("bad", {"x": object()})
    with pytest.raises(TypeError):
        cache.put("bad", ["not", "a", "dict"])  # type: ignore[arg-type]
    cache.close()
    with pytest.raises(RuntimeError):
        cache.get("k")


def test_memory_cache_lru_evicts_least_recently_used():
    cache = VerdictCache(None, lru_size=2)
    cache.put("a", {"v": 1})
    cache.put("b", {"v": 2})
    assert cache.get("a") == {"v": 1}  # "a" is now the most recent
    cache.put("c", {"v": 3})
    assert cache.get("b") is None
    assert cache.get("a") == {"v": 1}
    assert cache.get("c") == {"v": 3}


def test_file_cache_persists_creates_parents_and_uses_wal(tmp_path):
    path = tmp_path / "deep" / "er" / "cache.sqlite"
    with VerdictCache(path, lru_size=1) as cache:
        cache.put("a", {"v": 1})
        cache.put("b", {"v": 2})  # evicts "a" from the LRU, not from the file
        assert cache.get("a") == {"v": 1}
        cache.put("a", {"v": 10})  # replace
        assert cache.count() == 2
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = VerdictCache(str(path))
    assert reopened.get("a") == {"v": 10}
    assert reopened.get("b") == {"v": 2}
    assert reopened.get("c") is None
    assert (reopened.hits, reopened.misses) == (2, 1)
    reopened.close()
    reopened.close()  # twice is harmless


def test_two_caches_on_one_file_see_each_others_writes(tmp_path):
    path = tmp_path / "shared.sqlite"
    a, b = VerdictCache(path), VerdictCache(path)
    assert b.get("k1") is None  # a miss is not remembered...
    a.put("k1", {"from": "a"})
    assert b.get("k1") == {"from": "a"}  # ...so b sees a's later write
    b.put("k2", {"from": "b"})
    assert a.get("k2") == {"from": "b"}
    a.close()
    b.close()


def test_corrupt_or_foreign_file_raises_one_line_cache_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(CacheError) as info:
        VerdictCache(junk)
    message = str(info.value)
    assert isinstance(info.value, RlaifError)
    assert str(junk) in message and "delete it" in message and "\n" not in message

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE verdicts (id INTEGER PRIMARY KEY, other TEXT)")
    with pytest.raises(CacheError, match=r"foreign\.sqlite"):
        VerdictCache(foreign)


def test_cache_shared_by_threads(tmp_path):
    cache = VerdictCache(tmp_path / "threads.sqlite", lru_size=50)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(200):
                cache.put(f"{t}-{i}", {"t": t, "i": i})
                assert cache.get(f"{t}-{i // 2}") == {"t": t, "i": i // 2}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.count() == 800
    assert cache.hits == 800
    cache.close()


def test_cache_get_throughput_memory_and_sqlite(tmp_path):
    path = tmp_path / "perf.sqlite"
    keys = [cache_key("anthropic", "claude", f"answer {i}", {"temperature": 0.0}) for i in range(3_000)]
    with VerdictCache(path) as cache:
        for key in keys:
            cache.put(key, VERDICT)
        rounds = 20
        t0 = time.perf_counter()
        for _ in range(rounds):
            for key in keys:
                cache.get(key)
        memory_rate = rounds * len(keys) / (time.perf_counter() - t0)
        assert cache.hits == rounds * len(keys)

    with VerdictCache(path) as cold:  # a fresh LRU: every first get reads SQLite
        t0 = time.perf_counter()
        for key in keys:
            cold.get(key)
        sqlite_rate = len(keys) / (time.perf_counter() - t0)
        assert cold.hits == len(keys)

    print(f"\nVerdictCache.get: {memory_rate:,.0f}/s from memory, {sqlite_rate:,.0f}/s from SQLite (cold LRU)")
    assert memory_rate >= 25_000
    assert sqlite_rate >= 2_500


# -------------------------------------------------------------------------------------------- limiter


def test_rpm_paces_calls_after_the_burst():
    async def main() -> tuple[float, list[float]]:
        limiter = RateLimiter(concurrency=100, rpm=600)  # 10/s, burst 10
        starts: list[float] = []

        async def call() -> None:
            async with limiter.slot():
                starts.append(time.monotonic())

        t0 = time.monotonic()
        await asyncio.gather(*(call() for _ in range(30)))
        return t0, starts

    t0, starts = asyncio.run(main())
    elapsed = max(starts) - t0
    print(f"\nrpm=600: 30 calls in {elapsed:.2f} s")
    assert 1.8 <= elapsed <= 3.0
    assert sum(s - t0 < 0.05 for s in starts) == 10  # the burst: one second's worth at once
    for s in starts:  # never more than burst + rate * window starts in any one-second window
        assert sum(s <= u < s + 1.0 for u in starts) <= 21


def test_concurrency_is_never_exceeded():
    async def main() -> tuple[int, float, int]:
        limiter = RateLimiter(concurrency=4)
        now, peak = 0, 0

        async def call() -> None:
            nonlocal now, peak
            async with limiter.slot():
                now += 1
                peak = max(peak, now, limiter.in_flight)
                await asyncio.sleep(0.2)
                now -= 1

        t0 = time.monotonic()
        await asyncio.gather(*(call() for _ in range(12)))
        return peak, time.monotonic() - t0, limiter.in_flight

    peak, elapsed, left = asyncio.run(main())
    assert peak == 4
    assert left == 0
    assert 0.55 <= elapsed <= 1.0  # three waves of 0.2 s


def test_tpm_paces_calls_by_tokens():
    async def main() -> list[float]:
        limiter = RateLimiter(concurrency=100, tpm=60_000)  # 1,000 tokens/s, burst 1,000
        starts: list[float] = []

        async def call() -> None:
            async with limiter.slot(tokens=1_000):
                starts.append(time.monotonic())

        await asyncio.gather(*(call() for _ in range(4)))
        return starts

    starts = asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    print(f"\ntpm=60,000 at 1,000 tokens/call: gaps {', '.join(f'{g:.2f}' for g in gaps)} s")
    assert all(0.9 <= g <= 1.3 for g in gaps)


def test_oversized_call_runs_on_a_full_bucket_and_record_corrects_the_bucket():
    async def main() -> tuple[float, float, float]:
        # 1,000 tokens/s with a 0.1 s burst: the bucket holds 100 tokens.
        limiter = RateLimiter(concurrency=10, tpm=60_000, burst_s=0.1)
        t0 = time.monotonic()
        async with limiter.slot(tokens=300):  # above the capacity: allowed on the full bucket, leaves -200
            pass
        big = time.monotonic() - t0
        async with limiter.slot(tokens=100):  # waits for -200 -> 100: 0.3 s
            pass
        after_big = time.monotonic() - t0
        limiter.record(estimated=100, actual=400)  # 300 more than taken: back to -300
        t1 = time.monotonic()
        async with limiter.slot(tokens=100):  # waits for -300 -> 100: 0.4 s
            pass
        return big, after_big, time.monotonic() - t1

    big, after_big, after_record = asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert big < 0.05
    assert 0.27 <= after_big <= 0.5
    assert 0.37 <= after_record <= 0.6


def test_pause_until_delays_new_starts_but_not_calls_in_flight():
    async def main() -> tuple[float, float]:
        limiter = RateLimiter(concurrency=10)
        t0 = time.monotonic()
        in_flight_done = asyncio.Event()

        async def in_flight() -> float:
            async with limiter.slot():
                await asyncio.sleep(0.2)
            in_flight_done.set()
            return time.monotonic() - t0

        task = asyncio.create_task(in_flight())
        await asyncio.sleep(0.01)
        limiter.pause_until(t0 + 0.5)
        limiter.pause_until(t0 + 0.1)  # an earlier deadline does not shorten the pause
        async with limiter.slot():
            started = time.monotonic() - t0
        return await task, started

    in_flight_end, new_start = asyncio.run(main())
    assert in_flight_end < 0.35
    assert 0.49 <= new_start <= 0.7


def test_waiters_are_served_in_arrival_order():
    async def queued() -> list[int]:
        limiter = RateLimiter(concurrency=1, rpm=6_000)  # 100/s, burst 100
        order: list[int] = []

        async def call(i: int) -> None:
            async with limiter.slot():
                order.append(i)
                await asyncio.sleep(0.001)

        tasks = []
        for i in range(30):
            tasks.append(asyncio.create_task(call(i)))
            await asyncio.sleep(0)  # arrive one after another
        await asyncio.gather(*tasks)
        return order

    async def small_after_large() -> list[str]:
        # 1,000 tokens/s, bucket of 100: after "first" empties it, "large" needs 0.1 s and "small" only 0.01 s,
        # but "small" arrived later and must not overtake (a large call would starve behind small ones).
        limiter = RateLimiter(concurrency=10, tpm=60_000, burst_s=0.1)
        order: list[str] = []

        async def call(name: str, tokens: int) -> None:
            async with limiter.slot(tokens=tokens):
                order.append(name)

        tasks = []
        for name, tokens in [("first", 100), ("large", 100), ("small", 10)]:
            tasks.append(asyncio.create_task(call(name, tokens)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(queued()) == list(range(30))
    assert asyncio.run(small_after_large()) == ["first", "large", "small"]


def test_cancelled_waiters_release_nothing_they_did_not_take():
    async def main() -> tuple[float, float, int, float]:
        # A waiter cancelled while queued behind a call in flight.
        limiter = RateLimiter(concurrency=1)
        release = asyncio.Event()

        async def holder() -> None:
            async with limiter.slot():
                await release.wait()

        async def waiter() -> None:
            async with limiter.slot():
                raise AssertionError("the cancelled waiter must never start")

        held = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        await held
        t0 = time.monotonic()
        async with limiter.slot():
            queued_free = time.monotonic() - t0
            left = limiter.in_flight

        # A waiter cancelled while holding the concurrency slot and waiting for the requests bucket.
        paced = RateLimiter(concurrency=1, rpm=60)  # 1/s, burst 1
        t1 = time.monotonic()
        async with paced.slot():  # takes the only request
            pass
        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.1)
        waiting.cancel()
        await asyncio.sleep(0)
        async with paced.slot():  # the slot is free again, and the waiter took no request: starts at ~1 s
            paced_start = time.monotonic() - t1
        return queued_free, paced_start, left, paced.waited_s

    queued_free, paced_start, left, waited = asyncio.run(asyncio.wait_for(main(), timeout=5))
    assert queued_free < 0.05
    assert left == 1
    # ~1 s: paced, and the cancelled waiter took no request (it would push the start to ~2 s); wide margins, since
    # a loaded machine shifts every figure a little (0.89996 was seen against an earlier bound of 0.9)
    assert 0.8 <= paced_start <= 1.6
    assert waited >= 0.8  # the cancelled waiter's 0.1 s and the last call's ~0.9 s


def test_limiter_sustains_the_reward_benchmark_rate():
    # The reward-service benchmark's shape (1,000 calls at rpm=3,840 = 64/s, concurrency 32, 0.5 s per call),
    # cut to 192 calls: six full waves of 32, so the ideal is exactly 64/s, about 3 s.
    calls, rate_limit = 192, 3_840 / 60

    async def main() -> tuple[float, int]:
        limiter = RateLimiter(concurrency=32, rpm=3_840)
        peak = 0

        async def call() -> None:
            nonlocal peak
            async with limiter.slot(tokens=500):
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(0.5)

        t0 = time.monotonic()
        await asyncio.gather(*(call() for _ in range(calls)))
        return calls / (time.monotonic() - t0), peak

    rate, peak = asyncio.run(main())
    print(f"\nrpm=3,840, concurrency 32, 0.5 s calls: {rate:.1f} calls/s achieved (limit {rate_limit:.0f}/s)")
    assert peak == 32
    assert 0.9 * rate_limit <= rate <= 1.05 * rate_limit


# ----------------------------------------------------------------------------------------------- cost


def test_cost_usd_from_price_per_million_tokens():
    price = Price(input_per_mtok=3.0, output_per_mtok=15.0)
    assert cost_usd(price, 1_000, 200) == pytest.approx(0.006)
    assert cost_usd(price, 0, 0) == 0.0
    assert cost_usd(None, 10**9, 10**9) == 0.0
    assert cost_usd(Price(), 1_000, 1_000) == 0.0
    with pytest.raises(ValueError):
        cost_usd(price, -1, 0)
    with pytest.raises(ValueError):
        Price(input_per_mtok=-1.0)


def test_spend_budget_checks_before_and_charges_in_flight_calls():
    budget = SpendBudget(0.01)
    budget.check()
    budget.charge(0.006)
    assert budget.remaining_usd == pytest.approx(0.004)
    assert not budget.exhausted
    budget.check()
    budget.charge(0.006)  # a call in flight when the budget ran out is still charged
    assert budget.spent_usd == pytest.approx(0.012)
    assert budget.remaining_usd == 0.0
    assert budget.exhausted
    with pytest.raises(BudgetExhausted) as info:
        budget.check()
    message = str(info.value)
    assert isinstance(info.value, RlaifError)
    assert "spent 0.0120 of budget 0.0100 USD" in message and "raise the judge's budget_usd" in message
    assert "\n" not in message
    with pytest.raises(ValueError):
        budget.charge(-1.0)


def test_unlimited_budget_and_thread_safe_charges():
    budget = SpendBudget(None)

    def charge() -> None:
        for _ in range(10_000):
            budget.charge(0.001)

    threads = [threading.Thread(target=charge) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    budget.check()
    assert budget.spent_usd == pytest.approx(40.0)
    assert budget.remaining_usd is None
    assert not budget.exhausted
