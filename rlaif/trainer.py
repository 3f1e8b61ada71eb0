"""The orchestrator: rollout workers, the reward service and the learner, on Ray, in one asyncio loop.

One loop serves both modes. Groups (n episodes of one task) are generated and scored concurrently and land
in a buffer; the learner takes `batch_tasks` groups per step. What bounds staleness is admission: a new
group may start only if the step that will train it is at most `max_staleness` versions ahead of the
weights the engines hold now. `sync` mode is `max_staleness = 0`: a batch is generated with version k, the
learner trains, the weights go out, and only then does generation resume. `async` mode with
`max_staleness = s` lets generation run up to s versions ahead, overlapping it (and the judges' latency)
with training. A group whose staleness still exceeds the bound when drawn (refills reorder things) is
dropped and counted.

Groups are dropped, never trained on, when any episode or reward hit an infrastructure failure
(`infra_error`), or, with dynamic sampling, when all rewards are equal (no signal); drops are refilled with
new tasks and counted by reason. Every scored trajectory is appended to the run directory before it is
used; checkpoints hold the buffer and the tasks in flight, so a resumed run loses and repeats nothing.

Actors are placed as `rlaif.placement` plans; the rollout workers, their weight sync and their return after a
lost node are `rlaif.fleet`'s. A learner that dies ends the run with the command that resumes it.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlaif import checkpoint
from rlaif.actors import actor_lost
from rlaif.config import Config, TrainConfig, dump_config
from rlaif.errors import RlaifError
from rlaif.fleet import Fleet
from rlaif.learner import Learner, Sample
from rlaif.loss import group_advantages
from rlaif.placement import alive_nodes, check_fits, check_sandbox_nodes, plan_layout
from rlaif.registry import load_environment
from rlaif.rollout_worker import RolloutWorker
from rlaif.rundir import RunDir
from rlaif.types import Task, Trajectory


@dataclass
class ScoredGroup:
    """A finished group: its task's position in the data stream, the oldest weight version it used."""

    index: int
    version: int
    trajectories: list[Trajectory]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "version": self.version,
                "trajectories": [t.model_dump(mode="json") for t in self.trajectories]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoredGroup:
        return cls(data["index"], data["version"], [Trajectory.model_validate(t) for t in data["trajectories"]])


@dataclass
class Progress:
    """What the trainer reports after each step (for the console display)."""

    step: int
    steps: int
    metrics: dict[str, float]


@dataclass
class _State:
    step: int = 0
    version: int = 0
    cursor: int = 0
    buffer: list[ScoredGroup] = field(default_factory=list)
    requeue: list[int] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    phases: Counter[str] = field(default_factory=Counter)


class Trainer:
    """Build with a config, then `await run()`; see `train` for the synchronous entry point."""

    def __init__(self, config: Config, run: RunDir, *, on_step: Callable[[Progress], None] = lambda p: None) -> None:
        self.config, self.rundir, self.on_step = config, run, on_step
        self.env = load_environment(config.env.name, config.env.args)
        self.tasks: list[Task] = self.env.tasks("train")
        if not self.tasks:
            raise RlaifError(f"environment {config.env.name!r} has no train tasks; check env.args")
        if config.rollout.group_size < 2:
            raise RlaifError("rollout.group_size must be at least 2 for group-relative advantages; set it to 2 or more")
        # Weights reach the engines every `sync_every` versions, so that many minus one is staleness by design.
        self.max_staleness = (config.train.max_staleness if config.train.mode == "async" else 0) \
            + config.train.sync_every - 1
        self.state = _State()
        self.engine_version = 0
        self.inflight: dict[int, asyncio.Task] = {}
        self.finished_since_draw = 0
        self.infra_streak: list[str] = []  # errors of consecutive groups lost to infrastructure
        self.training = 0  # 1 while a drawn batch is being trained: the next one trains on the version after
        self.changed = asyncio.Event()
        self.episode_slots = asyncio.Semaphore(config.train.episode_concurrency)
        self.step_stats: Counter[str] = Counter()

    # ---- the data stream -------------------------------------------------------------------------------
    def task_at(self, index: int) -> Task:
        """Task number `index` of the stream: the train tasks, reshuffled every epoch from the run seed."""
        epoch, offset = divmod(index, len(self.tasks))
        order = list(range(len(self.tasks)))
        random.Random(self.config.run.seed * 1_000_003 + epoch).shuffle(order)
        return self.tasks[order[offset]]

    def _next_index(self) -> int:
        if self.state.requeue:
            return self.state.requeue.pop(0)
        self.state.cursor += 1
        return self.state.cursor - 1

    # ---- Ray actors ---------------------------------------------------------------------------------------
    async def start(self, resume_from: Path | None) -> None:
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
                dtype=self.config.model.dtype, seed=self.config.run.seed)
            for i in range(t.learners)]
        self.learner = self.learners[0]  # rank 0: weights for the engines, checkpoints
        if t.learners > 1:
            address = await self.learner.endpoint.remote()
            await asyncio.gather(*(a.join.remote(address, rank, t.learners) for rank, a in enumerate(self.learners)))
        worker = ray.remote(RolloutWorker)  # restarted by Ray when it or its node dies (see rlaif.fleet)
        self.fleet = Fleet(
            lambda i: worker.options(**on("rollout worker", i, max_restarts=-1, max_task_retries=0,
                                          max_concurrency=t.episode_concurrency + 8)).remote(self.config, i),
            t.rollout_workers, self.learner, transport=weight_transport(t),
            layout=(t.bucket_mb, self.config.model.dtype), restart_timeout_s=t.worker_restart_timeout_s,
            version=lambda: self.state.version, on_change=self.changed.set, count=self._count_lost)
        self.reward = RewardService(self.config, workers=t.reward_workers, num_cpus=t.reward_cpus,
                                    restart_timeout_s=t.worker_restart_timeout_s,
                                    resources=t.reward_resources)
        await asyncio.gather(self.fleet.start(), self.reward.start())
        if resume_from is not None:
            self._restore(resume_from)
            await asyncio.gather(*(a.load.remote(str(resume_from)) for a in self.learners))
        await self.sync_weights()

    async def close(self) -> None:
        import ray

        for task in self.inflight.values():
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        if hasattr(self, "fleet"):
            await self.fleet.close()
        if hasattr(self, "reward"):
            await self.reward.close()
        for actor in getattr(self, "learners", []):
            ray.kill(actor)
        for pg in getattr(self, "pgs", []):
            ray.util.remove_placement_group(pg)

    async def sync_weights(self) -> float:
        """Send the learner's weights to every rollout worker in service (see `rlaif.fleet`); returns seconds."""
        started = time.monotonic()
        await self.fleet.sync(self.state.version)
        self.engine_version = self.state.version
        self.changed.set()
        return time.monotonic() - started

    # ---- generation ---------------------------------------------------------------------------------------
    def _may_admit(self) -> bool:
        pending = len(self.state.buffer) + len(self.inflight)
        trains_at = self.state.version + self.training + pending // self.config.learner.batch_tasks
        return trains_at - self.engine_version <= self.max_staleness

    async def _admit_forever(self) -> None:
        while True:
            while self._may_admit():
                index = self._next_index()
                self.inflight[index] = asyncio.create_task(self._produce(index))
            self.changed.clear()
            await self.changed.wait()

    async def _produce(self, index: int) -> None:
        try:
            group: ScoredGroup | None = await self._generate_group(index)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # an actor died or raised: the group is lost to infrastructure, not a score
            group, reason, error = None, "infra_error", f"{type(err).__name__}: {err}"[:300]
            rows = [{"group_index": index, "dropped": reason, "error": repr(err)[:500]}]
            lost = actor_lost(err)
        else:
            reason, error, lost = self._drop_reason(group), _infra_error(group), False
            rows = [{**t.model_dump(mode="json"), "group_index": index, "dropped": reason} for t in group.trajectories]
        if error is None:
            self.infra_streak.clear()
        elif not lost:  # a lost worker is the fleet's to bring back (or give up on, which does count)
            self.infra_streak.append(error)
        self.rundir.append_trajectories(rows)
        del self.inflight[index]
        self.finished_since_draw += 1
        if reason:
            self._count_drop(reason)
        else:
            self.state.buffer.append(group)
        self.changed.set()

    def _count_drop(self, reason: str, groups: int = 1) -> None:
        self.state.dropped[reason] += groups
        self.step_stats[f"dropped/{reason}"] += groups

    def _count_lost(self, what: str) -> None:
        self.state.lost[what] += 1
        self.step_stats[f"lost/{what}"] += 1

    async def _generate_group(self, index: int) -> ScoredGroup:
        task, n = self.task_at(index), self.config.rollout.group_size
        version = self.engine_version
        group_id = f"{task.id}@{index}"

        async def episode(j: int) -> Trajectory:
            async with self.episode_slots:
                traj, submission = await self.fleet.rollout(index, task, group_id)
            if submission is not None:
                started = time.monotonic()
                traj.reward = await self.reward.grade(task, submission)
                traj.timings["reward"] = time.monotonic() - started
            return traj

        trajectories = await asyncio.gather(*(episode(j) for j in range(n)))
        return ScoredGroup(index, min([version, *(t.weight_version for t in trajectories)]), list(trajectories))

    def _drop_reason(self, group: ScoredGroup) -> str | None:
        if _infra_error(group) is not None:
            return "infra_error"
        totals = {t.reward.total for t in group.trajectories}
        if self.config.learner.dynamic_sampling and len(totals) == 1:
            return "no_signal"
        return None

    # ---- training -----------------------------------------------------------------------------------------
    async def _next_batch(self) -> list[ScoredGroup]:
        b = self.config.learner.batch_tasks
        cap = b * self.config.learner.max_fill_rounds
        while len(self.state.buffer) < b and self.finished_since_draw < cap:
            if len(self.infra_streak) >= cap:
                raise RlaifError(f"{len(self.infra_streak)} groups in a row failed on infrastructure (rollout "
                                 f"workers, sandboxes or judges); the last: {self.infra_streak[-1]}")
            self.changed.clear()
            await self.changed.wait()
        self.finished_since_draw = 0
        self.training = 1
        batch, self.state.buffer = self.state.buffer[:b], self.state.buffer[b:]
        fresh = [g for g in batch if self.state.version - g.version <= self.max_staleness]
        if len(fresh) < len(batch):
            self._count_drop("stale", len(batch) - len(fresh))
        self.changed.set()
        return fresh

    def _samples(self, batch: list[ScoredGroup]) -> list[Sample]:
        if not batch:
            return []
        n = self.config.rollout.group_size
        rewards = torch.tensor([t.reward.total for g in batch for t in g.trajectories], dtype=torch.float32)
        scale = "group" if self.config.learner.scale_rewards else "none"
        advantages = group_advantages(rewards, n, scale=scale).tolist()
        samples = []
        for traj, advantage in zip((t for g in batch for t in g.trajectories), advantages, strict=True):
            masked = self.config.learner.mask_truncated and traj.status == "truncated"
            for turn in traj.turns:
                mask = [0] * len(turn.loss_mask) if masked else turn.loss_mask
                samples.append(Sample(turn.prompt_ids, turn.completion_ids, turn.logprobs, mask, advantage))
        return [s for s in samples if s.completion_ids]

    async def _learn(self, samples: list[Sample]) -> dict[str, float]:
        """One update: the batch split over the learners (one shard each), their metrics combined."""
        n = len(self.learners)
        if n == 1:
            return await self.learner.step.remote(samples)
        ordered = sorted(samples, key=lambda s: len(s.prompt_ids) + len(s.completion_ids))
        tokens = sum(sum(s.loss_mask) for s in samples) or 1
        parts = await asyncio.gather(*(a.step.remote(ordered[i::n], len(samples), tokens)
                                       for i, a in enumerate(self.learners)))
        same = {"grad_norm", "lr"}  # identical on every rank after the all-reduce
        metrics = {k: v for k, v in parts[0].items() if k in same}
        for part in parts:
            for key, value in part.items():
                if key not in same:
                    metrics[key] = max(metrics.get(key, 0.0), value) if key == "train_s" else \
                        metrics.get(key, 0.0) + value
        return metrics

    async def run(self) -> dict[str, Any]:
        """Train to `learner.steps`; returns the summary (samples/s and phase seconds exclude the first step)."""
        total = self.config.learner.steps
        admit = asyncio.create_task(self._admit_forever())
        first_step_end: float | None = None
        samples_after_first = 0
        phases_after_first: Counter[str] = Counter()
        try:
            while self.state.step < total:
                step_start = time.monotonic()
                batch = await self._next_batch()
                wait_s = time.monotonic() - step_start
                metrics = self._batch_metrics(batch)
                samples = self._samples(batch)
                train_s = sync_s = 0.0
                if samples:
                    started = time.monotonic()
                    metrics.update(await self._learn(samples))
                    train_s = time.monotonic() - started
                    self.state.version += 1
                else:
                    self.state.dropped["empty_step"] += 1
                self.training = 0
                self.state.step += 1
                last = self.state.step == total
                if samples and (self.state.step % self.config.train.sync_every == 0 or last):
                    sync_s = await self.sync_weights()
                else:
                    self.changed.set()
                step_s = time.monotonic() - step_start
                episodes = sum(len(g.trajectories) for g in batch)
                phases = {"wait": wait_s, "train": train_s, "sync": sync_s, "step": step_s,
                          "generate": metrics.pop("_generate_s"), "reward": metrics.pop("_reward_s")}
                metrics.update({f"time/{k}_s": v for k, v in phases.items()})
                metrics.update({"episodes": episodes, "version": self.state.version,
                                "trained_groups": [g.index for g in batch] if samples else [],
                                "tokens_per_s": metrics.get("completion_tokens", 0.0) / step_s if step_s else 0.0})
                metrics.update({f"dropped_total/{k}": v for k, v in self.state.dropped.items()})
                metrics.update({f"lost_total/{k}": v for k, v in self.state.lost.items()})
                metrics.update({f"reward_service/{k}": v for k, v in self.reward.stats.items()})
                metrics.update(self.step_stats)
                self.step_stats.clear()
                self.state.samples += episodes
                if first_step_end is None:
                    first_step_end = time.monotonic()
                else:
                    samples_after_first += episodes
                    phases_after_first.update(phases)
                self.rundir.log_metrics(self.state.step, metrics)
                self.on_step(Progress(self.state.step, total, metrics))
                every = self.config.train.checkpoint_every
                if last or (every and self.state.step % every == 0):
                    await self.save_checkpoint()
        except Exception as err:
            # Rollout and reward workers that die are the fleet's and the reward service's to handle; a lost
            # actor that gets here is a learner, which holds the only copy of the weights and optimizer.
            if not actor_lost(err):
                raise
            raise RlaifError(f"a learner died ({type(err).__name__}); the run stops at step {self.state.step}: "
                             f"continue it from its last checkpoint with `rlaif train --resume {self.rundir.path}` "
                             "(or `rlaif launch --resume`)") from None
        finally:
            admit.cancel()
        # Groups still in flight belong to steps that will not run; the last checkpoint holds them as tasks to
        # generate again, so none may write a trajectory row after it.
        for task in self.inflight.values():
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        wall = time.monotonic() - first_step_end if first_step_end and total > 1 else 0.0
        return {"steps": self.state.step, "samples": samples_after_first, "wall_s": wall,
                "samples_per_s": samples_after_first / wall if wall else 0.0,
                "phases_s": dict(phases_after_first), "dropped": dict(self.state.dropped),
                "lost": dict(self.state.lost), "reward_service": dict(self.reward.stats),
                "run_dir": str(self.rundir.path), "model_dir": str(await self.export_model())}

    async def export_model(self) -> Path:
        """The trained policy as a Hugging Face model directory, `RUN/model` (adapters merged), written atomically:
        what `rlaif eval --policy vllm:RUN/model`, vLLM or transformers load."""
        final = self.rundir.path / "model"
        staging = self.rundir.path / ".model.partial"
        shutil.rmtree(staging, ignore_errors=True)
        await self.learner.save_model.remote(str(staging))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final

    def _batch_metrics(self, batch: list[ScoredGroup]) -> dict[str, float]:
        trajs = [t for g in batch for t in g.trajectories]
        if not trajs:
            return {"_generate_s": 0.0, "_reward_s": 0.0}
        totals = [t.reward.total for t in trajs]
        mean = sum(totals) / len(totals)
        metrics: dict[str, float] = {
            "reward/mean": mean,
            "reward/std": math.sqrt(sum((x - mean) ** 2 for x in totals) / len(totals)),
            "pass_rate": sum(x >= 1.0 for x in totals) / len(totals),
            "truncated_rate": sum(t.status == "truncated" for t in trajs) / len(trajs),
            "completion_tokens": float(sum(len(turn.completion_ids) for t in trajs for turn in t.turns)),
            "staleness/mean": sum(self.state.version - g.version for g in batch) / len(batch),
            "staleness/max": float(max(self.state.version - g.version for g in batch)),
            "judge_cost_usd": sum(_cost(t.reward.details) for t in trajs),
            "_generate_s": sum(t.timings.get("generate", 0.0) for t in trajs) / len(trajs),
            "_reward_s": sum(t.timings.get("reward", 0.0) for t in trajs) / len(trajs),
        }
        for name in {k for t in trajs for k in t.reward.components}:
            values = [t.reward.components.get(name) for t in trajs]
            values = [v for v in values if v is not None]
            if values:
                metrics[f"reward/{name}"] = sum(values) / len(values)
        return metrics

    # ---- checkpoints --------------------------------------------------------------------------------------
    async def save_checkpoint(self) -> Path:
        """Snapshot the driver's state first (no await in between), then let the learner write its part."""
        s = self.state
        trainer_state = {
            "step": s.step, "version": s.version, "cursor": s.cursor,
            "requeue": sorted([*s.requeue, *self.inflight]),
            "buffer": [g.to_json() for g in s.buffer], "dropped": dict(s.dropped), "lost": dict(s.lost),
            "samples": s.samples,
            "offsets": self.rundir.offsets(), "config": dump_config(self.config),
        }
        staging = checkpoint.staging_dir(self.rundir.path, s.step)
        await self.learner.save.remote(str(staging))
        return checkpoint.commit(staging, trainer_state, keep=self.config.train.keep_checkpoints)

    def _restore(self, path: Path) -> None:
        data = checkpoint.read_trainer_state(path)
        self.state = _State(step=data["step"], version=data["version"], cursor=data["cursor"],
                            buffer=[ScoredGroup.from_json(g) for g in data["buffer"]], requeue=list(data["requeue"]),
                            dropped=Counter(data["dropped"]), lost=Counter(data.get("lost", {})),
                            samples=data["samples"])
        self.rundir.truncate(data["offsets"])


def _infra_error(group: ScoredGroup) -> str | None:
    """The first infrastructure failure of a group's episodes or rewards, or None."""
    for traj in group.trajectories:
        if traj.status == "infra_error":
            return traj.error or "episode infra_error"
        if traj.reward is None or traj.reward.status == "infra_error":
            details = traj.reward.details if traj.reward else {}
            notes = [d.get("error") or d.get("note") for d in details.values() if isinstance(d, dict)]
            return next((str(n) for n in notes if n), "reward infra_error")
    return None


def _cost(details: Any) -> float:
    """Sum of every `cost_usd` in a reward's (nested) details."""
    if isinstance(details, dict):
        return sum(float(v) if k == "cost_usd" and isinstance(v, int | float) else _cost(v) for k, v in details.items())
    if isinstance(details, list):
        return sum(_cost(v) for v in details)
    return 0.0


def _start_ray(config: Config) -> None:
    from rlaif.local_ray import init_local_ray

    t = config.train
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # inherited by the actors: the console shows progress
    address = t.ray_address or os.environ.get("RAY_ADDRESS")  # set inside a Ray job (`rlaif launch`)
    if address:
        import ray

        if not ray.is_initialized():
            ray.init(address=address)
        return
    needed = t.learners * t.learner_cpus + t.rollout_workers * t.rollout_cpus + t.reward_workers * t.reward_cpus + 1
    init_local_ray(num_cpus=max(os.cpu_count() or 1, math.ceil(needed)))


def weight_transport(t: TrainConfig) -> str:
    """`train.weight_transport`, with `auto` resolved: broadcast when learner and engines hold whole GPUs each."""
    if t.weight_transport != "auto":
        return t.weight_transport
    return "broadcast" if t.learner_gpus >= 1 and t.rollout_gpus >= 1 else "object_store"


async def train_async(config: Config, *, run_root: str | None = None, resume: str | Path | None = None,
                      on_step: Callable[[Progress], None] = lambda p: None) -> dict[str, Any]:
    """Train from `config`, in a new run directory under `run_root` (default `run.root`), or resume one."""
    if Path(config.model.path).exists():  # Ray actors may run elsewhere: a local model path must be absolute
        config = config.model_copy(update={"model": config.model.model_copy(
            update={"path": str(Path(config.model.path).resolve())})})
    if resume is not None:
        run = RunDir.open(resume, wandb_project=config.train.wandb_project)
        ckpt = checkpoint.latest(run.path)
        if ckpt is None:
            raise RlaifError(f"{resume}: no complete checkpoint to resume from; start a new run instead")
    else:
        run = RunDir.create(run_root or config.run.root, config.run.name, dump_config(config),
                            wandb_project=config.train.wandb_project)
        ckpt = None
    _start_ray(config)
    trainer = Trainer(config, run, on_step=on_step)
    try:
        await trainer.start(ckpt)
        return await trainer.run()
    finally:
        await trainer.close()
        run.close()


def train(config: Config, **kwargs: Any) -> dict[str, Any]:
    """The synchronous entry point of `train_async` (what `rlaif train` and the benchmarks call)."""
    return asyncio.run(train_async(config, **kwargs))
