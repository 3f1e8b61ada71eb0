"""The run's judge ledger: one owner of every judge's budget and rate limits, however many processes call.

Each reward worker builds its own `Judge`s. If each held its own limiter and budget, `concurrency`, `rpm`, `tpm`
and `budget_usd` would be multiplied by the number of workers, and a restarted worker would start again at
$0. A `JudgeLedger` holds them once: a judge asks it before each call (`begin`, which returns a ticket) and
reports after (`end`). In a run on Ray the ledger is one actor that the reward service creates before its
workers, on the driver's node, and that outlives their restarts (`RemoteLedger` is the workers' view of it).
With a `state_path` (the run directory's `judge_spend.json`) it rewrites the spend there after every call,
so `rlaif train --resume`, and a driver that crashed, start from what was really spent.

The budget is never overrun. A call may start only if the spend, plus the worst case of the calls in flight,
plus this call's worst case, fits in the budget; `Judge` bounds a call's cost by every byte of its prompt
being a token (plus `TEMPLATE_TOKENS` for the chat template) and `max_tokens` out. A call that does not fit
waits while calls in flight may still settle for less than their worst case; one that could not fit even
with none in flight raises `BudgetExhausted`. A ticket not ended within its lease (the judge's `timeout_s`
plus `LEASE_SLACK_S`: its caller died) is charged its worst case (the provider may have billed it) and its
concurrency slot is freed.

Not thread-safe: one event loop (the actor's, or the process's) owns it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.core.config import JudgeConfig
from rlaif.errors import RlaifError
from rlaif_rewards.cost import BudgetExhausted, SpendBudget
from rlaif_rewards.limits import RateLimiter

TEMPLATE_TOKENS = 256
"""Tokens a chat template and the API may add to a prompt, in the worst-case cost of a call."""
LEASE_SLACK_S = 5.0
SWEEP_S = 1.0


@dataclass
class _Account:
    limiter: RateLimiter
    budget: SpendBudget
    lease_s: float
    calls: int = 0


@dataclass
class _Ticket:
    judge: str
    slot: AbstractAsyncContextManager[None]
    tokens: int
    worst_usd: float
    expires: float


class JudgeLedger:
    """Budgets and rate limits of `judges` (by name) for one run; see the module docstring."""

    def __init__(self, judges: Iterable[JudgeConfig], state_path: str | Path | None = None) -> None:
        self.accounts = {j.name: _Account(RateLimiter(j.concurrency, j.rpm, j.tpm), SpendBudget(j.budget_usd),
                                          j.timeout_s + LEASE_SLACK_S) for j in judges}
        self.state_path = Path(state_path) if state_path else None
        self._tickets: dict[int, _Ticket] = {}
        self._ids = itertools.count()
        self._settled: asyncio.Condition | None = None
        self._sweeper: asyncio.Task[None] | None = None
        if self.state_path is not None and self.state_path.exists():
            self._load(self.state_path)

    async def begin(self, judge: str, tokens: int, worst_usd: float) -> int:
        """Wait until a call of `judge` estimating `tokens` tokens and costing at most `worst_usd` may start; its
        ticket. Raises `BudgetExhausted` when it cannot fit in the budget."""
        account = self._account(judge)
        self._start_sweeping()
        slot = account.limiter.slot(tokens)
        await slot.__aenter__()
        try:
            await self._reserve(judge, account.budget, worst_usd)
        except BaseException:
            await slot.__aexit__(None, None, None)
            raise
        ticket = next(self._ids)
        self._tickets[ticket] = _Ticket(judge, slot, tokens, worst_usd, time.monotonic() + account.lease_s)
        return ticket

    async def end(self, ticket: int, tokens: int | None, cost_usd: float) -> None:
        """The call of `ticket` is over: it cost `cost_usd` and used `tokens` tokens (None: unknown, no reply)."""
        held = self._tickets.pop(ticket, None)
        if held is None:  # its lease ran out first: it was charged its worst case then
            return
        await self._settle(held, tokens, cost_usd)

    async def pause(self, judge: str, seconds: float) -> None:
        """Start no call of `judge` for `seconds` (the provider's `retry-after`)."""
        self._account(judge).limiter.pause_until(time.monotonic() + seconds)

    def spend(self) -> dict[str, dict[str, Any]]:
        """Per judge: `spent_usd`, `calls` (replies received) and `limit_usd`."""
        return {name: {"spent_usd": a.budget.spent_usd, "calls": a.calls, "limit_usd": a.budget.limit_usd}
                for name, a in self.accounts.items()}

    # ---- internals -------------------------------------------------------------------------------------
    def _account(self, judge: str) -> _Account:
        if judge not in self.accounts:
            raise RlaifError(f"judge {judge!r} is not one of the ledger's ({', '.join(self.accounts)}); "
                             "name a judge of reward.judges")
        return self.accounts[judge]

    async def _reserve(self, judge: str, budget: SpendBudget, worst_usd: float) -> None:
        if self._settled is None:
            self._settled = asyncio.Condition()
        async with self._settled:
            while not budget.reserve(worst_usd):
                if not any(held.judge == judge for held in self._tickets.values()):
                    raise BudgetExhausted(budget.spent_usd, budget.limit_usd or 0.0, judge)
                await self._settled.wait()  # a call in flight may settle for less than its worst case

    async def _settle(self, held: _Ticket, tokens: int | None, cost_usd: float) -> None:
        account = self.accounts[held.judge]
        account.budget.settle(held.worst_usd, cost_usd)
        if tokens is not None:
            account.calls += 1
            account.limiter.record(held.tokens, tokens)
        await held.slot.__aexit__(None, None, None)
        self._save()
        if self._settled is not None:
            async with self._settled:
                self._settled.notify_all()

    def _start_sweeping(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for ticket in [t for t, held in self._tickets.items() if held.expires < now]:
                held = self._tickets.pop(ticket)
                await self._settle(held, None, held.worst_usd)

    def _load(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text())["judges"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RlaifError(f"{path} is unreadable ({type(err).__name__}); it holds the run's judge spend: restore "
                             "it, or delete it to start the spend again at 0") from None
        for name, account in self.accounts.items():
            if name in saved:
                account.budget.settle(0.0, float(saved[name]["spent_usd"]))
                account.calls = int(saved[name]["calls"])

    def _save(self) -> None:
        if self.state_path is None:
            return
        data = {"judges": {n: {"spent_usd": a.budget.spent_usd, "calls": a.calls} for n, a in self.accounts.items()}}
        partial = self.state_path.with_name(self.state_path.name + ".partial")
        partial.write_text(json.dumps(data))
        os.replace(partial, self.state_path)


class RemoteLedger:
    """A reward worker's view of the run's `JudgeLedger` actor: the same coroutines, over Ray."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def begin(self, judge: str, tokens: int, worst_usd: float) -> int:
        from ray.exceptions import RayTaskError

        try:
            return await self.actor.begin.remote(judge, tokens, worst_usd)
        except RayTaskError as err:
            if isinstance(err.cause, BudgetExhausted):
                raise err.cause from None
            raise

    async def end(self, ticket: int, tokens: int | None, cost_usd: float) -> None:
        await self.actor.end.remote(ticket, tokens, cost_usd)

    async def pause(self, judge: str, seconds: float) -> None:
        await self.actor.pause.remote(judge, seconds)

    async def spend(self) -> dict[str, dict[str, Any]]:
        return await self.actor.spend.remote()


def start_ledger_actor(judges: list[JudgeConfig], state_path: str | Path | None) -> Any:
    """The run's ledger as a Ray actor on this (the driver's) node, where `state_path` is."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(JudgeLedger).options(num_cpus=0, max_restarts=0, max_concurrency=10_000,
                                           scheduling_strategy=here).remote(judges, state_path)
