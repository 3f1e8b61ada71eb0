"""The orchestrator: rollout workers, the reward service and the learner, on Ray, in one asyncio loop.

One loop serves both modes. Groups (n episodes of one task) are generated and scored concurrently and land
in a buffer; the learner takes `batch_tasks` groups per step. What bounds staleness is admission: a new
group may start only if the step that will train it is at most `max_staleness` versions ahead of the
weights the engines hold now. `sync` mode is `max_staleness = 0`: a batch is generated with version k, the
learner trains, the weights go out, and only then does generation resume. `async` mode with
`max_staleness = s` lets generation run up to s versions ahead, overlapping it (and the judges' latency)
with training. A group whose staleness still exceeds the bound when drawn (refills reorder things) is
dropped and counted.

A group whose reward has a `group`-mode judge is graded once all its episodes have finished, in one call that
judges its answers against each other (`rlaif_rewards.components.grade_group`); other groups are graded episode by
episode as each finishes. Groups are dropped, never trained on, when any episode or reward hit an infrastructure failure
(`infra_error`), or, with dynamic sampling, when all rewards are equal (no signal); drops are refilled with
new tasks and counted by reason. Every scored trajectory is handed to the run directory before it is used, and is
on disk before any checkpoint that covers it is complete (the run directory's writer thread does the disk work, so
the loop never waits on an fsync); checkpoints hold the buffer and the tasks in flight, so a resumed run loses and
repeats nothing.

The actors (learners, rollout fleet, reward service) are `rlaif.train.actors`'; a finished group's drop
reasons are `rlaif.train.groups`', its samples `rlaif.train.samples`', a step's figures `rlaif.train.metrics`'.
A learner that dies ends the run with the command that resumes it. A judge whose run-wide budget ran out
(`rlaif_rewards.ledger`) ends it too, after a checkpoint: the groups it left ungraded are tasks to generate
again, so a resume with a raised budget loses and repeats nothing.
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
from functools import partial
from pathlib import Path
from typing import Any

from rlaif.cluster.actors import actor_lost
from rlaif.core.config import Config, dump_config
from rlaif.env import Submission
from rlaif.errors import RlaifError
from rlaif.eval.stats import task_pass_rates
from rlaif.registry import load_environment
from rlaif.train import checkpoint
from rlaif.train.actors import RunActors, start_ray
from rlaif.train.groups import ScoredGroup
from rlaif.train.metrics import batch_metrics
from rlaif.train.rundir import RunDir
from rlaif.train.samples import build_samples
from rlaif.types import Task, Trajectory
from rlaif_rewards.components import group_judged
from rlaif_rewards.cost import BudgetExhausted


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
    no_signal: dict[str, int] = field(default_factory=dict)  # task id -> the stream epoch its group had no signal


class Trainer:
    """Build with a config, then `await run()`; see `train` for the synchronous entry point."""

    def __init__(self, config: Config, run: RunDir, *, on_step: Callable[[Progress], None] = lambda p: None) -> None:
        self.config, self.rundir, self.on_step = config, run, on_step
        self.env = load_environment(config.env.name, config.env.args)
        self.tasks: list[Task] = self.env.tasks("train")
        self.heldout: list[Task] = self.env.tasks("test") if config.train.heldout_every else []
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
        self.failure: BaseException | None = None  # what a producer raised: the next draw raises it
        self.training = 0  # 1 while a drawn batch is being trained: the next one trains on the version after
        self.changed = asyncio.Event()
        self.episode_slots = asyncio.Semaphore(config.train.episode_concurrency)
        self.step_stats: Counter[str] = Counter()
        self.actors = RunActors(config, spend_path=run.path / "judge_spend.json")

    # ---- the data stream -------------------------------------------------------------------------------
    def task_at(self, index: int) -> Task:
        """Task number `index` of the stream: the train tasks, reshuffled every epoch from the run seed."""
        epoch, offset = divmod(index, len(self.tasks))
        order = list(range(len(self.tasks)))
        random.Random(self.config.run.seed * 1_000_003 + epoch).shuffle(order)
        return self.tasks[order[offset]]

    def _next_index(self) -> int:
        """The next group's stream index: a requeued one first, else the cursor's, passing over tasks whose last group
        had no signal within `skip_no_signal_epochs` epochs (unless every task is passed over: then the cursor's)."""
        if self.state.requeue:
            return self.state.requeue.pop(0)
        skip = self.config.learner.skip_no_signal_epochs
        for _ in range(len(self.tasks) if skip else 0):
            epoch = self.state.cursor // len(self.tasks)
            last = self.state.no_signal.get(self.task_at(self.state.cursor).id)
            if last is None or epoch - last > skip:
                break
            self.state.cursor += 1
            self.step_stats["skipped/no_signal"] += 1
        self.state.cursor += 1
        return self.state.cursor - 1

    # ---- Ray actors ---------------------------------------------------------------------------------------
    async def start(self, resume_from: Path | None) -> None:
        await self.actors.start(version=lambda: self.state.version, on_change=self.changed.set,
                                count_lost=self._count_lost)
        if resume_from is not None:
            self._restore(resume_from)
            await asyncio.gather(*(a.load.remote(str(resume_from)) for a in self.actors.learners))
        await self.sync_weights()

    async def close(self) -> None:
        for task in self.inflight.values():
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        await self.actors.close()

    async def sync_weights(self) -> float:
        """Send the learner's weights to every rollout worker in service; returns seconds."""
        started = time.monotonic()
        await self.actors.fleet.sync(self.state.version)
        self.engine_version = self.state.version
        self.changed.set()
        return time.monotonic() - started

    # ---- generation ---------------------------------------------------------------------------------------
    def _may_admit(self) -> bool:
        """Whether a new group may start: the step that will train it (batches ahead of it, counting the one in
        training) exists, and is within the staleness bound of the engines' weights. Groups for steps past the last
        would only spend rollouts and judge calls while the run trains, syncs and saves its last step."""
        pending = len(self.state.buffer) + len(self.inflight)
        ahead = self.training + pending // self.config.learner.batch_tasks
        if self.state.step + ahead >= self.config.learner.steps:
            return False
        return self.state.version + ahead - self.engine_version <= self.max_staleness

    async def _admit_forever(self) -> None:
        while True:
            while self._may_admit():
                index = self._next_index()
                self.inflight[index] = asyncio.create_task(self._produce(index))
                self.inflight[index].add_done_callback(self._produced)
            self.changed.clear()
            await self.changed.wait()

    async def _produce(self, index: int) -> None:
        try:
            group: ScoredGroup | None = await self._generate_group(index)
        except asyncio.CancelledError:
            raise
        except BudgetExhausted as err:  # not the group's failure: it is generated again once the budget allows
            del self.inflight[index]
            self.state.requeue.append(index)
            self.failure = self.failure or err
            self.changed.set()
            return
        except Exception as err:  # an actor died or raised: the group is lost to infrastructure, not a score
            group, reason, error = None, "infra_error", f"{type(err).__name__}: {err}"[:300]
            rows = [{"group_index": index, "dropped": reason, "error": repr(err)[:500]}]
            lost = actor_lost(err)
        else:
            reason, error = group.drop_reason(self.config.learner.dynamic_sampling), group.infra_error()
            lost = False
            rows = [{**t.model_dump(mode="json"), "group_index": index, "dropped": reason} for t in group.trajectories]
        if error is None:
            self.infra_streak.clear()
        elif not lost:  # a lost worker is the fleet's to bring back (or give up on, which does count)
            self.infra_streak.append(error)
        self.rundir.append_trajectories(rows)
        del self.inflight[index]
        self.finished_since_draw += 1
        if reason == "no_signal":
            self.state.no_signal[group.trajectories[0].task_id] = index // len(self.tasks)
        if reason:
            self._count_drop(reason)
        else:
            self.state.buffer.append(group)
        self.changed.set()

    def _produced(self, task: asyncio.Task) -> None:
        """A producer that raised (the run directory failing to write, a bug) stops the run at the next draw; left
        alone, its group would hold its slot forever and the draw would wait for it."""
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()
            self.changed.set()

    def _count_drop(self, reason: str, groups: int = 1) -> None:
        self.state.dropped[reason] += groups
        self.step_stats[f"dropped/{reason}"] += groups

    def _count_lost(self, what: str) -> None:
        self.state.lost[what] += 1
        self.step_stats[f"lost/{what}"] += 1

    async def _generate_group(self, index: int) -> ScoredGroup:
        task = self.task_at(index)
        version = self.engine_version
        trajectories = await self._graded_group(task, self.config.rollout.group_size, index, f"{task.id}@{index}")
        return ScoredGroup(index, min([version, *(t.weight_version for t in trajectories)]), trajectories)

    async def _graded_group(self, task: Task, n: int, key: int, group_id: str,
                            temperature: float | None = None) -> list[Trajectory]:
        """`n` episodes of `task` on the fleet (`key` picks the worker; `temperature` None: the rollout's), graded by
        the run's reward: episode by episode as each finishes, or together once all have when a group-mode judge is
        in the reward."""
        together = group_judged([*self.env.graders(task), *self.config.reward.components], self.config.reward.judges)

        async def episode() -> tuple[Trajectory, Submission | None]:
            async with self.episode_slots:
                traj, submission = await self.actors.fleet.rollout(key, task, group_id, temperature)
            if submission is not None and not together:
                started = time.monotonic()
                traj.reward = await self.actors.reward.grade(task, submission)
                traj.timings["reward"] = time.monotonic() - started
            return traj, submission

        episodes = await _all_or_none([episode() for _ in range(n)])
        trajectories = [traj for traj, _ in episodes]
        submissions = [submission for _, submission in episodes]
        if together and None not in submissions:  # else an episode failed: the group is dropped as infra_error
            started = time.monotonic()
            rewards = await self.actors.reward.grade_group(task, submissions, group_id)
            for traj, reward in zip(trajectories, rewards, strict=True):
                traj.reward, traj.timings["reward"] = reward, time.monotonic() - started
        return trajectories

    async def heldout_probe(self) -> dict[str, float]:
        """The current weights on the first `heldout_tasks` held-out tasks, `heldout_samples` each: `heldout/pass@1`
        (as `rlaif eval` counts it), `heldout/reward` and the seconds it took. It runs between two steps, so every
        episode uses this step's weights (no sync can happen meanwhile); training groups go on being generated.
        Episodes lost to infrastructure are not samples; `heldout/skipped` counts them."""
        started = time.monotonic()
        tasks = self.heldout[:self.config.train.heldout_tasks]
        n = self.config.train.heldout_samples
        temperature = self.config.train.heldout_temperature
        groups = await asyncio.gather(*(self._graded_group(task, n, -1 - i, f"heldout:{task.id}@{self.state.step}",
                                                           temperature)
                                        for i, task in enumerate(tasks)), return_exceptions=True)
        for outcome in groups:  # a lost worker costs the probe samples; anything else stops the run, as in training
            if isinstance(outcome, BaseException) and not actor_lost(outcome):
                raise outcome
        trajs = [t for g in groups if not isinstance(g, BaseException) for t in g]
        scored = [t for t in trajs if t.reward is not None and not t.infra_error()]
        rates = task_pass_rates(scored)
        return {"heldout/pass@1": sum(rates.values()) / len(rates) if rates else math.nan,
                "heldout/reward": sum(t.reward.total for t in scored) / len(scored) if scored else math.nan,
                "heldout/skipped": float(len(tasks) * n - len(scored)), "time/heldout_s": time.monotonic() - started}

    # ---- training -----------------------------------------------------------------------------------------
    async def _next_batch(self) -> list[ScoredGroup]:
        """The next `batch_tasks` groups with signal and within the staleness bound: stale ones are dropped as they are
        found and replaced by groups still to come, up to `max_fill_rounds` batches' worth since the last draw."""
        b = self.config.learner.batch_tasks
        cap = b * self.config.learner.max_fill_rounds
        while True:
            if self.failure is not None:
                raise self.failure
            fresh = [g for g in self.state.buffer if self.state.version - g.version <= self.max_staleness]
            if len(fresh) < len(self.state.buffer):
                self._count_drop("stale", len(self.state.buffer) - len(fresh))
                self.state.buffer = fresh
                self.changed.set()  # room for more to be admitted
            if len(self.state.buffer) >= b or self.finished_since_draw >= cap:
                break
            if len(self.infra_streak) >= cap:
                raise RlaifError(f"{len(self.infra_streak)} groups in a row failed on infrastructure (rollout "
                                 f"workers, sandboxes or judges); the last: {self.infra_streak[-1]}")
            self.changed.clear()
            await self.changed.wait()
        self.finished_since_draw = 0
        self.training = 1
        batch, self.state.buffer = self.state.buffer[:b], self.state.buffer[b:]
        self.changed.set()
        return batch

    async def run(self) -> dict[str, Any]:
        """Train to `learner.steps`; returns the summary (samples/s and phase seconds exclude the first step)."""
        lc = self.config.learner
        total = lc.steps
        admit = asyncio.create_task(self._admit_forever())
        first_step_end: float | None = None
        samples_after_first = 0
        empty_draws = 0
        phases_after_first: Counter[str] = Counter()
        try:
            while self.state.step < total:
                step_start = time.monotonic()
                batch = await self._next_batch()
                wait_s = time.monotonic() - step_start
                metrics = batch_metrics(batch, self.state.version)
                samples = build_samples(batch, self.config.rollout.group_size, mask_truncated=lc.mask_truncated,
                                        scale_rewards=lc.scales_rewards)
                train_s = sync_s = 0.0
                if not samples:  # nothing trainable was drawn: not a step; draw again, within a bound
                    self.training = 0
                    self._count_drop("empty_draw")
                    empty_draws += 1
                    if empty_draws >= lc.max_fill_rounds:
                        raise RlaifError(
                            f"{empty_draws} draws in a row held nothing to train on (groups dropped so far: "
                            f"{dict(self.state.dropped)}); rewards that never vary within a group give no signal: "
                            "check the graders with `rlaif env check`, or set learner.dynamic_sampling=false")
                    self.changed.set()
                    continue
                empty_draws = 0
                started = time.monotonic()
                metrics.update(await self.actors.learn(samples))
                train_s = time.monotonic() - started
                self.state.version += 1
                self.training = 0
                self.state.step += 1
                last = self.state.step == total
                if self.state.step % self.config.train.sync_every == 0 or last:
                    sync_s = await self.sync_weights()
                else:
                    self.changed.set()
                step_s = time.monotonic() - step_start
                every = self.config.train.heldout_every
                if every and (self.state.step % every == 0 or last):
                    metrics.update(await self.heldout_probe())
                episodes = sum(len(g.trajectories) for g in batch)
                phases = {"wait": wait_s, "train": train_s, "sync": sync_s, "step": step_s,
                          "generate": metrics.pop("_generate_s"), "reward": metrics.pop("_reward_s")}
                metrics.update({f"time/{k}_s": v for k, v in phases.items()})
                metrics.update({"episodes": episodes, "version": self.state.version,
                                "trained_groups": [g.index for g in batch],
                                "tokens_per_s": metrics.get("completion_tokens", 0.0) / step_s if step_s else 0.0})
                metrics.update({f"dropped_total/{k}": v for k, v in self.state.dropped.items()})
                metrics.update({f"lost_total/{k}": v for k, v in self.state.lost.items()})
                metrics.update({f"reward_service/{k}": v for k, v in self.actors.reward.stats.items()})
                for judge, spend in (await self.actors.reward.ledger.spend()).items():
                    metrics.update({f"judge/{judge}/spent_usd": spend["spent_usd"],
                                    f"judge/{judge}/calls": spend["calls"]})
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
        except BudgetExhausted as err:
            admit.cancel()
            await self.save_checkpoint()
            key = f"reward.judges.{err.judge}.budget_usd" if err.judge else "the judge's budget_usd"
            raise RlaifError(f"{str(err).partition(';')[0]}; the run stopped at step {self.state.step} with a "
                             f"checkpoint: raise the budget and continue with `rlaif train --resume "
                             f"{self.rundir.path} {key}=MORE`") from None
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
                "lost": dict(self.state.lost), "reward_service": dict(self.actors.reward.stats),
                "run_dir": str(self.rundir.path), "model_dir": str(await self.export_model())}

    async def export_model(self) -> Path:
        """The trained policy as a Hugging Face model directory, `RUN/model` (adapters merged), written atomically:
        what `rlaif eval --policy vllm:RUN/model`, vLLM or transformers load."""
        final = self.rundir.path / "model"
        staging = self.rundir.path / ".model.partial"
        shutil.rmtree(staging, ignore_errors=True)
        await self.actors.learner.save_model.remote(str(staging))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final

    # ---- checkpoints --------------------------------------------------------------------------------------
    async def save_checkpoint(self) -> Path:
        """Snapshot the driver's state first (no await in between), then let the learner write its part; the commit
        runs on the run directory's writer thread (generation goes on meanwhile), after the run files' bytes the
        snapshot records."""
        s = self.state
        trainer_state = {  # fresh copies only: it is serialised later, on the writer thread
            "step": s.step, "version": s.version, "cursor": s.cursor,
            "requeue": sorted([*s.requeue, *self.inflight]),
            "buffer": [g.to_json() for g in s.buffer], "dropped": dict(s.dropped), "lost": dict(s.lost),
            "samples": s.samples, "no_signal": dict(s.no_signal),
            "offsets": self.rundir.offsets(), "config": dump_config(self.config),
        }
        staging = checkpoint.staging_dir(self.rundir.path, s.step)
        await self.actors.learner.save.remote(str(staging))
        commit = partial(checkpoint.commit, staging, trainer_state, keep=self.config.train.keep_checkpoints)
        return await asyncio.wrap_future(self.rundir.after_writes(commit))

    def _restore(self, path: Path) -> None:
        data = checkpoint.read_trainer_state(path)
        self.state = _State(step=data["step"], version=data["version"], cursor=data["cursor"],
                            buffer=[ScoredGroup.from_json(g) for g in data["buffer"]], requeue=list(data["requeue"]),
                            dropped=Counter(data["dropped"]), lost=Counter(data.get("lost", {})),
                            samples=data["samples"], no_signal=dict(data.get("no_signal", {})))
        self.rundir.truncate(data["offsets"])


async def _all_or_none(coros: list[Any]) -> list[Any]:
    """`asyncio.gather`, except that the first failure cancels the others (a lost group's episodes stop)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def train_async(config: Config, *, run_root: str | None = None, resume: str | Path | None = None,
                      on_step: Callable[[Progress], None] = lambda p: None) -> dict[str, Any]:
    """Train from `config`, in a new run directory under `run_root` (default `run.root`), or resume one."""
    if config.rollout.temperature <= 0:
        raise RlaifError(f"rollout.temperature {config.rollout.temperature} cannot be trained on: GRPO needs sampled "
                         "groups, and the learner scores tokens under the sampling distribution; set it above 0")
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
    start_ray(config)
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
