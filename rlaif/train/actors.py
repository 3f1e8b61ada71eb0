"""A run's actors on Ray: the learners, the rollout fleet and the reward service, started and closed together.

Placement follows `rlaif.cluster.placement`'s plan: a layout that can never fit is refused before anything
starts, one that waits on busy resources times out after 300 s with the keys to change. The rollout workers,
their weight sync and their return after a lost node are `rlaif.cluster.fleet`'s; the reward workers are
`rlaif_rewards.service`'s. Learner rank 0 holds the weights the engines get and writes the checkpoints.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlaif.cluster.fleet import Fleet
from rlaif.cluster.placement import alive_nodes, check_fits, check_sandbox_nodes, local_node, plan_layout
from rlaif.cluster.rollout_worker import RolloutWorker
from rlaif.core.config import Config, TrainConfig
from rlaif.errors import RlaifError
from rlaif.train.learner import Learner, Sample
from rlaif.train.metrics import merge_ranks


class RunActors:
    """Build empty, then `await start(...)`; `close()` releases whatever was started, even after a failed start."""

    def __init__(self, config: Config, spend_path: Path | None = None) -> None:
        """`spend_path`: the run's judge spend file (`rlaif_rewards.ledger`)."""
        self.config, self.spend_path = config, spend_path
        self.learners: list[Any] = []
        self.fleet: Fleet | None = None
        self.reward: Any = None
        self.pgs: list[Any] = []

    @property
    def learner(self) -> Any:
        """Rank 0: weights for the engines, checkpoints, the exported model."""
        return self.learners[0]

    async def start(self, *, version: Callable[[], int], on_change: Callable[[], None],
                    count_lost: Callable[[str], None]) -> None:
        """Place and start every actor. `version` reads the learner's current weight version, `on_change` wakes
        the trainer when workers come and go, `count_lost` counts a lost or recovered worker by kind."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from rlaif_rewards.service import RewardService

        t = self.config.train
        layout = plan_layout(t)
        check_fits(layout, alive_nodes())
        await asyncio.to_thread(check_sandbox_nodes, self.config.sandbox.backend)
        self.pgs = [placement_group(g.bundles, strategy=g.strategy) for g in layout.groups]
        try:
            await asyncio.wait_for(asyncio.gather(*(pg.ready() for pg in self.pgs)), timeout=300)
        except TimeoutError:
            shown = [f"{g.strategy} {g.bundles}" for g in layout.groups]
            raise RlaifError(f"Ray could not place the learner and rollout workers ({'; '.join(shown)}) within "
                             "300 s: the resources exist but are taken; free them or lower train.*_cpus / "
                             "train.*_gpus") from None

        def on(role: str, i: int, **options: Any) -> Any:
            """Actor options for the `i`-th actor of `role`: its bundle's resources, in its placement group."""
            g, b = layout.slot(role, i)
            bundle = layout.groups[g].bundles[b]
            custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
            strategy = PlacementGroupSchedulingStrategy(placement_group=self.pgs[g], placement_group_bundle_index=b)
            return dict(num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0), resources=custom,
                        scheduling_strategy=strategy, **options)

        lc = self.config.learner
        learner = ray.remote(Learner)
        self.learners = [
            learner.options(**on("learner", i)).remote(
                self.config.model.path, lr=lc.lr, variant=lc.loss, eps_low=lc.eps_low, eps_high=lc.eps_high,
                beta=lc.beta, tis_cap=lc.tis_cap, max_grad_norm=lc.max_grad_norm, micro_batch=lc.micro_batch,
                max_completion_length=self.config.rollout.max_tokens, weight_decay=lc.weight_decay,
                warmup_steps=lc.warmup_steps, lora_rank=lc.lora_rank, lora_alpha=lc.lora_alpha,
                epochs=lc.epochs, mini_batches=lc.mini_batches, temperature=self.config.rollout.temperature,
                dtype=self.config.model.dtype,
                seed=self.config.run.seed)
            for i in range(t.learners)]
        if t.learners > 1:
            address = await self.learner.endpoint.remote()
            await asyncio.gather(*(a.join.remote(address, rank, t.learners) for rank, a in enumerate(self.learners)))
        worker = ray.remote(RolloutWorker)  # restarted by Ray when it or its node dies (see rlaif.cluster.fleet)
        self.fleet = Fleet(
            lambda i: worker.options(**on("rollout worker", i, max_restarts=-1, max_task_retries=0,
                                          max_concurrency=t.episode_concurrency + 8)).remote(self.config, i),
            t.rollout_workers, self.learner, transport=weight_transport(t),
            layout=(t.bucket_mb, self.config.model.dtype), restart_timeout_s=t.worker_restart_timeout_s,
            version=version, on_change=on_change, count=count_lost, probe_every=t.probe_every,
            probe_tolerance=t.probe_tolerance or (0.2 if self.config.model.dtype == "bfloat16" else 0.02),
            sync_timeout_s=t.weight_sync_timeout_s)
        self.reward = RewardService(self.config, workers=t.reward_workers, num_cpus=t.reward_cpus,
                                    restart_timeout_s=t.worker_restart_timeout_s, resources=t.reward_resources,
                                    spend_path=str(self.spend_path) if self.spend_path else None)
        await asyncio.gather(self.fleet.start(), self.reward.start())

    async def learn(self, samples: list[Sample]) -> dict[str, float]:
        """One update: the batch split over the learners (one shard each, balanced by length), metrics combined."""
        n = len(self.learners)
        if n == 1:
            return await self.learner.step.remote(samples)
        ordered = sorted(samples, key=lambda s: len(s.prompt_ids) + len(s.completion_ids))
        tokens = sum(sum(s.loss_mask) for s in samples) or 1
        return merge_ranks(await asyncio.gather(*(a.step.remote(ordered[i::n], len(samples), tokens)
                                                  for i, a in enumerate(self.learners))))

    async def close(self) -> None:
        import ray

        if self.fleet is not None:
            await self.fleet.close()
        if self.reward is not None:
            await self.reward.close()
        for actor in self.learners:
            ray.kill(actor)
        for pg in self.pgs:
            ray.util.remove_placement_group(pg)


def start_ray(config: Config) -> None:
    """Join the cluster of `train.ray_address` / `RAY_ADDRESS` (set inside a Ray job), or start a local Ray
    pinned to 127.0.0.1 with enough CPUs for the layout."""
    from rlaif.cluster.local_ray import init_local_ray

    t = config.train
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # inherited by the actors: the console shows progress
    address = t.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        import ray

        if not ray.is_initialized():
            ray.init(address=address)
        return
    init_local_ray(num_cpus=int(local_node(t)["CPU"]))


def weight_transport(t: TrainConfig) -> str:
    """`train.weight_transport`, with `auto` resolved: broadcast when learner and engines hold whole GPUs each."""
    if t.weight_transport != "auto":
        return t.weight_transport
    return "broadcast" if t.learner_gpus >= 1 and t.rollout_gpus >= 1 else "object_store"
