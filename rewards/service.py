"""The reward service: grading as a service, in Ray actors or behind HTTP, with the same code.

`Rewarder` grades submissions of one environment: it owns the sandbox pools and the judges. It runs
in-process, inside Ray actors (`RewardService`: a pool of async actors on CPU resources, so thousands of
sandbox and judge calls overlap), or behind HTTP (`rlaif_rewards.http_front`), so a team can grade outside the
training cluster and a judge outage cannot take training down.

A worker that dies mid-call is restarted by Ray; the call is retried on another worker and counted
(`stats["worker_failures"]`). After `retries` failed attempts the result is `infra_error`: never a score.

The judges' budgets and rate limits belong to the run, not to a worker: `RewardService` starts one ledger actor
(`rlaif_rewards.ledger`) that every worker's judges ask before each call, and that outlives worker restarts. A
judge's budget running out is not a failed grade: `grade` raises `BudgetExhausted`, and the trainer stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from rlaif.cluster.rotation import Event, NoWorkerInService, WorkerRotation
from rlaif.core.config import Config
from rlaif.env import GradeContext, Submission
from rlaif.registry import load_environment
from rlaif.types import RewardResult, Task
from rlaif_rewards.cost import BudgetExhausted


class Rewarder:
    """Grades submissions of one environment. `start()` before use, `close()` after. `ledger`: the run's judge
    ledger (a `RemoteLedger`); by default this rewarder's judges share one of their own."""

    def __init__(self, config: Config, run_id: str = "reward", ledger: Any = None) -> None:
        self.config, self.run_id, self.ledger = config, run_id, ledger
        self.env = load_environment(config.env.name, config.env.args)
        self.ctx: GradeContext | None = None
        self._pools = None

    async def start(self) -> None:
        from rlaif.sandbox.pool import SandboxPools
        from rlaif_rewards.judge import Judge
        from rlaif_rewards.ledger import JudgeLedger

        self._pools = await SandboxPools.from_config(self.config.sandbox, run_id=self.run_id).__aenter__()
        ledger = self.ledger or JudgeLedger(self.config.reward.judges)
        judges = {j.name: Judge(j, ledger=ledger) for j in self.config.reward.judges}
        self.ctx = GradeContext(self._pools, judges, self.config.reward.components)

    async def grade(self, task: Task, submission: Submission) -> RewardResult:
        from rlaif_rewards.components import grade

        if self.ctx is None:
            await self.start()
        return await grade(self.env, task, submission, self.ctx)

    async def grade_group(self, task: Task, submissions: list[Submission], seed: int | str = 0) -> list[RewardResult]:
        """A finished GRPO group's rewards, group-mode judges judging across it (`components.grade_group`)."""
        from rlaif_rewards.components import grade_group

        if self.ctx is None:
            await self.start()
        return await grade_group(self.env, task, submissions, self.ctx, seed)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        if self.ctx is not None:
            for judge in self.ctx.judges.values():
                await judge.close()
            await self._pools.close()
            self.ctx = None


class RewardService:
    """A pool of `Rewarder` Ray actors, dispatched round-robin. Call from an asyncio loop in the Ray driver.

    A worker whose actor or node died is taken out of rotation until it answers a ping again (Ray restarts it
    wherever its resources are), so lost capacity costs throughput while it lasts, never a wrong score. The
    mechanism is `rlaif.cluster.rotation.WorkerRotation`.
    """

    def __init__(self, config: Config, workers: int = 2, num_cpus: float = 0.5, retries: int = 2,
                 resources: dict[str, float] | None = None, restart_timeout_s: float = 600.0,
                 spend_path: str | None = None) -> None:
        """`spend_path`: where the ledger keeps the judges' spend across restarts (the run's `judge_spend.json`)."""
        import ray

        from rlaif_rewards.ledger import RemoteLedger, start_ledger_actor

        actor = ray.remote(Rewarder).options(num_cpus=num_cpus, resources=resources or {}, max_restarts=-1,
                                             max_task_retries=0, max_concurrency=1000)
        self.retries, self.restart_timeout_s = retries, restart_timeout_s
        self.stats: Counter[str] = Counter()
        self.ledger = RemoteLedger(start_ledger_actor(config.reward.judges, spend_path))
        self.rotation: WorkerRotation[Any] = WorkerRotation(
            (actor.remote(config, f"reward-{i}", self.ledger) for i in range(workers)), name="reward worker",
            revive=lambda i: self.actors[i].ping.remote(), wait_s=restart_timeout_s, on_event=self._on_event)

    @property
    def actors(self) -> list[Any]:
        return self.rotation.workers

    async def start(self) -> None:
        await asyncio.gather(*(a.start.remote() for a in self.actors))

    async def grade(self, task: Task, submission: Submission) -> RewardResult:
        """Grade on a worker in rotation. A call lost with its worker goes to another (waiting, while none is
        in rotation, up to `restart_timeout_s`) without spending a retry; `retries` bounds calls that failed
        inside a worker. A judge's budget running out raises `BudgetExhausted`."""
        return (await self._on_a_worker(lambda a: a.grade.remote(task, submission), 1))[0]

    async def grade_group(self, task: Task, submissions: list[Submission], seed: int | str = 0) -> list[RewardResult]:
        """A finished group's rewards, graded together on one worker (`Rewarder.grade_group`), as `grade` does."""
        return await self._on_a_worker(lambda a: a.grade_group.remote(task, submissions, seed), len(submissions))

    async def _on_a_worker(self, call: Any, n: int) -> list[RewardResult]:
        """`n` rewards from `call(actor)` (one, or a group's), retried as `grade` says; infra_error for all when it
        keeps failing."""
        from ray.exceptions import RayTaskError

        error = ""
        deadline = time.monotonic() + self.restart_timeout_s
        for _ in range(self.retries + 1):
            try:
                result = await self.rotation.call(call, deadline=deadline)
            except NoWorkerInService as err:
                error = str(err)
                break
            except RayTaskError as err:  # failed inside the worker
                if isinstance(err.cause, BudgetExhausted):
                    raise err.cause from None
                self.stats["worker_failures"] += 1
                error = type(err).__name__
                continue
            self.stats["graded"] += n
            return result if isinstance(result, list) else [result]
        self.stats["failed"] += n
        # One object per trajectory: a list of one object n times would make an edit to one reward an edit to all.
        return [RewardResult(status="infra_error", details={"error": f"reward workers failed: {error}"})
                for _ in range(n)]

    def _on_event(self, event: Event, i: int) -> None:
        if event == "call_lost":
            self.stats["worker_failures"] += 1
        elif event == "lost":
            self.stats["workers_lost"] += 1
        elif event == "given_up":
            self.stats["workers_given_up"] += 1  # its ping failed other than as a lost actor: it stays out

    async def close(self) -> None:
        import ray

        await self.rotation.close()
        await asyncio.gather(*(a.close.remote() for a in self.actors), return_exceptions=True)
        for actor in [*self.actors, self.ledger.actor]:
            ray.kill(actor)
