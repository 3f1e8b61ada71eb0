"""A rollout worker: one vLLM engine running many episodes at once, stamped with its weight version.

Run as a Ray actor (async: every call is a coroutine on the actor's event loop, so hundreds of episodes
share one continuously-batching engine). `rollout` runs one episode of the agent loop with the engine's
in-process policy and returns the trajectory, token-exact, with the submission to grade; grading is the
reward service's job. `load_weights` swaps in a new version between engine steps: requests in flight keep
going, and an episode is stamped with the version it started with, so its staleness is never
under-counted (the behaviour logprobs of its later tokens, which the newer weights produced, are what the
importance-sampling correction uses).
"""

from __future__ import annotations

import time
from typing import Any

from rlaif.cluster.actors import NotStarted
from rlaif.core.config import Config
from rlaif.env import Submission
from rlaif.policies.endpoints import Sampling
from rlaif.registry import load_environment
from rlaif.rollout.agent import run_episode
from rlaif.types import Task, Trajectory
from rlaif.weights.buckets import Bucket, WeightSyncError, verify
from rlaif.weights.engine_extension import WORKER_EXTENSION
from rlaif.weights.group import BroadcastAborted


class RolloutWorker:
    """`await start()`, then `rollout(...)` concurrently and `load_weights(...)` between them; `close()` at the end."""

    def __init__(self, config: Config, index: int = 0) -> None:
        self.config, self.index = config, index
        self.version = 0
        self.policy: Any = None
        self.pools: Any = None

    async def start(self) -> None:
        """Start the engine and the sandbox pools; a no-op when started (the trainer calls it again after a
        restart, which Ray does with a fresh instance)."""
        from rlaif.policies.engine import EnginePolicy
        from rlaif.sandbox.pool import SandboxPools

        if self.policy is not None:
            return
        self.env = load_environment(self.config.env.name, self.config.env.args)
        self.pools = await SandboxPools.from_config(self.config.sandbox, run_id=f"rollout-{self.index}").__aenter__()
        model = self.config.model
        self.policy = EnginePolicy.start(model.path, dtype=model.dtype, seed=self.config.run.seed + self.index,
                                         gpu_memory_utilization=self.config.train.gpu_memory_utilization,
                                         worker_extension_cls=WORKER_EXTENSION)

    async def rollout(self, task: Task, group_id: str,
                      temperature: float | None = None) -> tuple[Trajectory, Submission | None]:
        """One episode with the current weights, at `temperature` (None: `rollout.temperature`).

        No per-request seed: the engine's sampler is seeded once (`run.seed` + worker index); the CPU build's
        engine dies on a per-request seed ("CPU Generator does not use offset").
        """
        r = self._started().config.rollout
        sampling = Sampling(temperature=r.temperature if temperature is None else temperature, max_tokens=r.max_tokens)
        return await run_episode(self.env, task, self.policy, self.pools, sampling, max_turns=r.max_turns,
                                 group_id=group_id, weight_version=self.version)

    async def load_weights(self, buckets: list[Bucket], version: int, expected_digest: list[float]) -> dict[str, float]:
        """Object-store path: stage a new weight version bucket by bucket (generation goes on), swap it in, verify.

        Returns the seconds spent staging and swapping (generation pauses only for the swap).
        """
        started = time.monotonic()
        self._started()
        for bucket in buckets:
            await self.policy.engine.collective_rpc("rlaif_stage", args=(bucket.data, bucket.index))
        staged = time.monotonic()
        self._accept(version, expected_digest, await self.policy.engine.collective_rpc("rlaif_apply"))
        return {"stage_s": staged - started, "swap_s": time.monotonic() - staged,
                "bytes": float(sum(len(b.data) for b in buckets))}

    async def join_weight_group(self, host: str, port: int, base_rank: int, world_size: int) -> list[int]:
        """Broadcast path: join the learner's weight group (see `rlaif.weights.group`); returns the ranks taken."""
        args = (host, port, base_rank, world_size, self.config.train.weight_sync_timeout_s)
        return await self._started().policy.engine.collective_rpc("rlaif_join", args=args)

    async def receive_weights(self, plans: list[tuple[int, list]], version: int,
                              expected_digest: list[float]) -> dict[str, float]:
        """Broadcast path: load the buckets laid out as `plans` as the learner sends them, in one engine call
        (generation pauses for all of it), and verify. `held_bytes` is the most received-bucket memory the engine
        held at once.

        Raises `BroadcastAborted` when the broadcast failed: the engine keeps its version stamp and is out of the
        group (some of its layers may hold the new weights already; the fallback sync brings the rest).
        """
        started = time.monotonic()
        results = await self._started().policy.engine.collective_rpc("rlaif_receive", args=(plans,))
        aborted = [result["aborted"] for result in results if "aborted" in result]
        if aborted:
            raise BroadcastAborted(f"weight sync v{version} to rollout worker {self.index}: {aborted[0]}")
        self._accept(version, expected_digest, results)
        return {"swap_s": time.monotonic() - started, "bytes": float(sum(size for size, _ in plans)),
                "held_bytes": float(max(result["held_bytes"] for result in results))}

    def _accept(self, version: int, expected_digest: list[float], results: list[dict]) -> None:
        """Take `version` once every engine worker loaded every weight and its digest matches the learner's."""
        for result in results:
            if result["missing"]:
                raise WeightSyncError(f"weight sync v{version}: the engine got no value for {result['missing'][:5]}")
            verify(expected_digest, result["digest"])
        self.version = version

    async def probe(self, ids: list[int]) -> list[float]:
        """The engine's logprobs of `ids` (see `Learner.probe`): how the weights it holds score a fixed text."""
        return await self._started().policy.prompt_logprobs(ids)

    def _started(self) -> RolloutWorker:
        if self.policy is None:
            raise NotStarted(f"rollout worker {self.index} has no engine: call start() first")
        return self

    async def close(self) -> None:
        if self.policy is not None:
            await self.policy.close()
            self.policy = None
        if self.pools is not None:
            await self.pools.close()
            self.pools = None
