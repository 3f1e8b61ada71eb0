"""The reward service: grading as a service, in Ray actors or behind HTTP, with the same code.

`Rewarder` grades submissions of one environment: it owns the sandbox pools and the judges. It runs
in-process, inside Ray actors (`RewardService`: a pool of async actors on CPU resources, so thousands of
sandbox and judge calls overlap), or behind HTTP (`rlaif_rewards.http_front`), so a team can grade outside the
training cluster and a judge outage cannot take training down.

A worker that dies mid-call is restarted by Ray; the call is retried on another worker and counted
(`stats["worker_failures"]`). After `retries` failed attempts the result is `infra_error`: never a score.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from rlaif.core.config import Config
from rlaif.env import GradeContext, Submission
from rlaif.registry import load_environment
from rlaif.types import RewardResult, Task


class Rewarder:
    """Grades submissions of one environment. `start()` before use, `close()` after."""

    def __init__(self, config: Config, run_id: str = "reward") -> None:
        self.config, self.run_id = config, run_id
        self.env = load_environment(config.env.name, config.env.args)
        self.ctx: GradeContext | None = None
        self._pools = None

    async def start(self) -> None:
        from rlaif.sandbox.pool import SandboxPools
        from rlaif_rewards.judge import Judge

        self._pools = await SandboxPools.from_config(self.config.sandbox, run_id=self.run_id).__aenter__()
        judges = {j.name: Judge(j) for j in self.config.reward.judges}
        self.ctx = GradeContext(self._pools, judges, self.config.reward.components)

    async def grade(self, task: Task, submission: Submission) -> RewardResult:
        from rlaif_rewards.components import grade

        if self.ctx is None:
            await self.start()
        return await grade(self.env, task, submission, self.ctx)

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
    wherever its resources are), so lost capacity costs throughput while it lasts, never a wrong score.
    """

    def __init__(self, config: Config, workers: int = 2, num_cpus: float = 0.5, retries: int = 2,
                 resources: dict[str, float] | None = None, restart_timeout_s: float = 600.0) -> None:
        import ray

        actor = ray.remote(Rewarder).options(num_cpus=num_cpus, resources=resources or {}, max_restarts=-1,
                                             max_task_retries=0, max_concurrency=1000)
        self.actors = [actor.remote(config, f"reward-{i}") for i in range(workers)]
        self.retries, self.restart_timeout_s = retries, restart_timeout_s
        self.stats: Counter[str] = Counter()
        self.healthy = set(range(workers))
        self._probes: dict[int, asyncio.Task] = {}
        self._turn = itertools.count()

    async def start(self) -> None:
        await asyncio.gather(*(a.start.remote() for a in self.actors))

    async def grade(self, task: Task, submission: Submission) -> RewardResult:
        """Grade on a worker in rotation. A call lost with its worker goes to another (waiting, while none is
        in rotation, up to `restart_timeout_s`) without spending a retry; `retries` bounds calls that failed
        inside a worker."""
        from ray.exceptions import RayTaskError

        from rlaif.cluster.actors import actor_lost

        error: Any = None
        failures = 0
        deadline = time.monotonic() + self.restart_timeout_s
        while failures <= self.retries:
            i = await self._pick(deadline)
            if i is None:
                error = f"no reward worker in rotation for {self.restart_timeout_s:g} s"
                break
            try:
                result = await self.actors[i].grade.remote(task, submission)
                self.stats["graded"] += 1
                return result
            except Exception as err:
                if not (actor_lost(err) or isinstance(err, RayTaskError)):
                    raise
                self.stats["worker_failures"] += 1
                error = type(err).__name__
                if actor_lost(err):
                    self._lose(i)
                else:
                    failures += 1
        self.stats["failed"] += 1
        return RewardResult(status="infra_error", details={"error": f"reward workers failed: {error}"})

    async def _pick(self, deadline: float) -> int | None:
        """The next worker in rotation; with none, wait for one to come back until `deadline` (then None)."""
        while not self.healthy:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.5)
        pool = sorted(self.healthy)
        return pool[next(self._turn) % len(pool)]

    def _lose(self, i: int) -> None:
        if i in self.healthy:
            self.healthy.discard(i)
            self.stats["workers_lost"] += 1
            self._probes[i] = asyncio.create_task(self._probe(i))

    async def _probe(self, i: int) -> None:
        """Ping a lost worker until it answers (restarted), then put it back in rotation."""
        while True:
            try:
                await asyncio.wait_for(self.actors[i].ping.remote(), 10.0)
                break
            except Exception:  # still restarting, or not placed yet
                await asyncio.sleep(1.0)
        self.healthy.add(i)
        self._probes.pop(i, None)

    async def close(self) -> None:
        import ray

        for probe in self._probes.values():
            probe.cancel()
        await asyncio.gather(*(a.close.remote() for a in self.actors), return_exceptions=True)
        for actor in self.actors:
            ray.kill(actor)
