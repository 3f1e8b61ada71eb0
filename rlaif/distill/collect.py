"""Collecting teacher trajectories for a distillation warm start: run, grade, keep what passes.

The teacher plays each attempt through the agent loop (`rlaif.eval.evaluation.run_and_grade`), so its
trajectories have the same shape as the student's. An attempt is one (task, task variant, system-prompt
variant, sample) and ends as exactly one of
- `kept`: graded with reward >= `min_reward` (rejection sampling), and not a near-copy of a kept answer;
- `duplicate`: would be kept, but what the teacher wrote is near-identical to a kept answer for the same task;
- `rejected`: graded below `min_reward` (or its task rewrite was unusable);
- `failed`: the episode or its grade ended as infra_error (unreachable teacher, dead sandbox): never scored.
If every one of the first `EARLY_STOP` attempts of a run fails, the run stops; `Outcome.failures` counts the
reasons of failed attempts, for the command's verdict (`rlaif.eval.evaluation.check_skipped`).

Cost is the teacher's token usage (`Completion.usage`) at the given prices; with a budget, no attempt
starts once the spend reaches it (attempts in flight finish and are charged, as in `SpendBudget`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlaif.distill.dataset import CollectionDir, assistant_text, attempt_id, trajectory_row
from rlaif.distill.elicit import (
    check_opening,
    is_near_duplicate,
    rewrite_messages,
    rewrite_problem,
    with_system_prompt,
)
from rlaif.env import Environment, GradeContext
from rlaif.errors import RlaifError
from rlaif.eval.evaluation import run_and_grade
from rlaif.policies.endpoints import Completion, Policy, PolicyError, ReplayPolicy, Sampling, policy_from_spec
from rlaif.types import Message, Task
from rlaif_rewards.cost import Price, SpendBudget, cost_usd

EARLY_STOP = 8


class Teacher:
    """Who plays the teacher: `reference` (each task's reference solution, replayed) or a model endpoint."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.endpoint: Policy | None = None
        if spec != "reference":
            try:
                self.endpoint = policy_from_spec(spec)
            except RlaifError as err:
                raise RlaifError(f"--teacher: {err}; or `reference` to replay each task's reference solution") from None

    def policy(self, env: Environment, task: Task) -> Policy:
        return ReplayPolicy(env.reference_turns(task)) if self.endpoint is None else self.endpoint

    async def close(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close()


class MeteredPolicy(Policy):
    """A policy that counts the tokens it used (one per episode, so each row knows its own cost)."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.name = inner, inner.name
        self.input_tokens = self.output_tokens = 0

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]], sampling: Sampling,
                       history: list[int] | None = None) -> Completion:
        completion = await self.inner.complete(messages, tools, sampling, history)
        self.input_tokens += completion.usage.get("prompt_tokens", 0)
        self.output_tokens += completion.usage.get("completion_tokens", 0)
        return completion


@dataclass(frozen=True)
class Attempt:
    task: Task
    task_variant: str
    """`original` or `rewrite-i`."""
    system_variant: int
    """0: the environment's own system prompt; i: the i-th of `Elicitation.system_prompts`."""
    sample: int

    @property
    def id(self) -> str:
        return attempt_id(self.task.id, self.task_variant, self.system_variant, self.sample)


@dataclass
class Elicitation:
    """How trajectories are elicited; every choice is recorded in each row's provenance."""

    sampling: Sampling
    samples: int = 1
    system_prompts: list[str] = field(default_factory=list)
    rewrites: int = 0
    min_reward: float = 1.0


@dataclass
class Outcome:
    """What one run did (the directory's totals are in its ledger)."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    """The reasons of the `failed` attempts, by reason, the first to fail first."""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    not_started: int = 0
    stopped: str | None = None
    """Why attempts were left unstarted: the budget, or the early stop on infrastructure failures."""
    infra_stop: bool = False


class Collector:
    """Runs attempts with one teacher on one environment into a `CollectionDir`."""

    def __init__(self, env: Environment, teacher: Teacher, elicitation: Elicitation, *, price: Price | None = None,
                 budget_usd: float | None = None, concurrency: int = 8) -> None:
        if elicitation.rewrites and teacher.endpoint is None:
            raise RlaifError("--rewrites needs a model teacher (openai:BASE_URL:MODEL or anthropic:MODEL): the "
                             "reference teacher cannot restate a task")
        self.env, self.teacher, self.elicitation = env, teacher, elicitation
        self.price, self.budget_usd, self.concurrency = price, budget_usd, concurrency
        self.envs = [env, *(with_system_prompt(env, p) for p in elicitation.system_prompts)]
        self._rewrite_failures: dict[tuple[str, str], str] = {}

    def plan(self, tasks: list[Task], out: CollectionDir) -> list[Attempt]:
        """Every attempt the tasks call for that `out`'s ledger does not hold yet, task by task."""
        if tasks:
            for i, prompt in enumerate(self.elicitation.system_prompts, 1):
                check_opening(self.envs[i], tasks[0], prompt, None)
            if self.elicitation.rewrites:
                check_opening(self.env, tasks[0].model_copy(update={"prompt": "(rewritten)"}), None, "(rewritten)")
        variants = ["original", *(f"rewrite-{i}" for i in range(1, self.elicitation.rewrites + 1))]
        attempts = [Attempt(task, variant, system, sample) for task in tasks for variant in variants
                    for system in range(len(self.envs)) for sample in range(self.elicitation.samples)]
        return [a for a in attempts if a.id not in out.ledger]

    async def run(self, attempts: list[Attempt], out: CollectionDir, ctx: GradeContext,
                  on_done: Callable[[str], None] = lambda status: None) -> Outcome:
        """Run `attempts` (at most `concurrency` at once), recording each in `out` as it ends."""
        outcome, budget, slots = Outcome(), SpendBudget(self.budget_usd), asyncio.Semaphore(self.concurrency)
        first: list[str] = []
        early = min(EARLY_STOP, len(attempts))

        def spend(meter: MeteredPolicy) -> float:
            usd = cost_usd(self.price, meter.input_tokens, meter.output_tokens)
            budget.charge(usd)
            outcome.cost_usd += usd
            outcome.input_tokens += meter.input_tokens
            outcome.output_tokens += meter.output_tokens
            return usd

        def may_start() -> bool:
            if budget.exhausted and outcome.stopped is None:
                outcome.stopped = f"budget reached: spent {budget.spent_usd:.6g} of {self.budget_usd:.6g} USD"
            return outcome.stopped is None

        async def rewrite(task: Task, variant: str) -> None:
            async with slots:
                if may_start():
                    await self._rewrite(task, variant, out, spend)

        async def one(attempt: Attempt) -> None:
            async with slots:
                if not may_start():
                    outcome.not_started += 1
                    return
                status, reason = await self._attempt(attempt, out, ctx, spend)
            outcome.counts[status] += 1
            if status == "failed":
                outcome.failures[reason] += 1
            if len(first) < early:
                first.append(status)
                if len(first) == early and all(s == "failed" for s in first):
                    outcome.infra_stop = True
                    outcome.stopped = f"the first {early} attempts all failed on infrastructure"
            on_done(status)

        needed = {(a.task.id, a.task_variant): a.task for a in attempts if a.task_variant != "original"}
        await asyncio.gather(*(rewrite(task, variant) for (task_id, variant), task in needed.items()
                               if (task_id, variant) not in out.rewrites))
        await asyncio.gather(*(one(a) for a in attempts))
        return outcome

    async def _rewrite(self, task: Task, variant: str, out: CollectionDir,
                       spend: Callable[[MeteredPolicy], float]) -> None:
        """Ask the teacher to restate `task`'s prompt; cache the result in `out` (a failed call is not cached)."""
        meter = MeteredPolicy(self.teacher.endpoint)
        try:
            completion = await meter.complete(rewrite_messages(task.prompt), [], self.elicitation.sampling)
        except PolicyError as err:
            self._rewrite_failures[(task.id, variant)] = f"rewrite: {str(err)[:200]}"
            return
        finally:
            spend(meter)
        problem = ("the rewrite was cut off at --max-tokens" if completion.finish_reason == "length"
                   else rewrite_problem(task.prompt, completion.text))
        out.save_rewrite({"task_id": task.id, "variant": variant, "prompt": completion.text.strip(),
                          "problem": problem})

    async def _attempt(self, attempt: Attempt, out: CollectionDir, ctx: GradeContext,
                       spend: Callable[[MeteredPolicy], float]) -> tuple[str, str]:
        """Run, grade and record one attempt; its status and the ledger's reason."""
        task, key = attempt.task, (attempt.task.id, attempt.task_variant)
        if attempt.task_variant != "original":
            if key in self._rewrite_failures:
                return self._record(out, attempt, "failed", None, self._rewrite_failures[key])
            if (rewrite := out.rewrites[key])["problem"]:
                return self._record(out, attempt, "rejected", None, f"{attempt.task_variant}: {rewrite['problem']}")
            task = task.model_copy(update={"prompt": rewrite["prompt"]})
        env = self.envs[attempt.system_variant]
        meter = MeteredPolicy(self.teacher.policy(env, task))
        try:
            traj = await run_and_grade(env, task, meter, ctx, self.elicitation.sampling, group_id=attempt.id)
        finally:
            usd = spend(meter)
        reason = traj.infra_error()
        if reason:
            return self._record(out, attempt, "failed", None, reason)
        total = traj.reward.total
        if total < self.elicitation.min_reward:
            return self._record(out, attempt, "rejected", total, f"reward {total:.3f} < {self.elicitation.min_reward}")
        sampling = self.elicitation.sampling
        provenance = {"teacher": self.teacher.spec, "temperature": float(sampling.temperature),
                      "max_tokens": sampling.max_tokens, "sample": attempt.sample,
                      "system_variant": attempt.system_variant, "task_variant": attempt.task_variant,
                      "cost_usd": usd, "input_tokens": meter.input_tokens, "output_tokens": meter.output_tokens}
        row = trajectory_row(traj, row_id=attempt.id, env=self.env.name,
                             tools=[t.as_openai() for t in env.tools(task)], provenance=provenance)
        if is_near_duplicate(assistant_text(row), out.kept_texts.get(task.id, [])):
            return self._record(out, attempt, "duplicate", total, "near-identical to an answer kept for this task")
        out.keep(row)
        return "kept", ""

    @staticmethod
    def _record(out: CollectionDir, attempt: Attempt, status: str, reward: float | None,
                reason: str) -> tuple[str, str]:
        out.record(attempt.id, status, reward, reason)
        return status, reason


def summary(out: CollectionDir, outcome: Outcome, **about: Any) -> dict[str, Any]:
    """summary.json: the directory's counts by status (every run into it), and this run's cost and stop."""
    counts = out.counts()
    return {**about, **counts, "attempts": sum(counts.values()), "this_run": dict(outcome.counts),
            "cost_usd": outcome.cost_usd, "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens, "not_started": outcome.not_started, "stopped": outcome.stopped}
