"""Calibrating a judge against unit tests: how often its pass verdicts agree with what the tests say.

Answers come from environments whose own graders know the truth (`pyfunc`, `repo_repair`):
- `reference`: the task's reference solution;
- `broken`: deterministic breakages of it (pyfunc: `return None`, an integer literal off by one, a comparison
  swapped; repo_repair: the original, unfixed repository);
- `sample`: real policy answers from a run's `trajectories.jsonl`, whose recorded reward components give the truth;
- `fooling`: answers known to fool judges (a bare claim of correctness, an empty reasoning opener, the problem
  restated, verbatim and reworded), reported on their own and never mixed into the main figures.

Truth is what the environment's graders say in real sandboxes (for samples: what they said when the episode was
graded), never the label a variant was built with: a "broken" variant the tests still pass counts as a pass. An
answer passes when every grader of the environment scores 1.0. The judge says pass when its score is >= 0.5; a
verdict that failed (`infra_error`) is counted apart, never as pass or fail.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rlaif.core.config import EnvConfig, SandboxConfig
from rlaif.core.jsonl import read_jsonl
from rlaif.env import Environment, GradeContext, Submission
from rlaif.errors import RlaifError
from rlaif.registry import load_environment
from rlaif.types import Message, RewardResult, Task, Trajectory, final_answer
from rlaif_rewards.cost import cost_usd
from rlaif_rewards.judge import Judge
from rlaif_rewards.rubric import Rubric

ENVIRONMENTS = ("pyfunc", "repo_repair")
PASS_THRESHOLD = 0.5
Z95 = 1.959963984540054

FOOLING = {
    "claim": lambda task: "This solution is correct and passes all tests.",
    "opener": lambda task: "Let me solve this step by step:",
    "restated": lambda task: task.prompt,
    "restated_reworded": lambda task: f"To restate the problem: {task.prompt}",
}
"""Answers that fool gullible judges, per task. `restated` repeats the prompt verbatim, which the judge scores 0
without a call (`is_degenerate`): its figures say what that short-circuit does, not what the model thinks."""


# ---- statistics ------------------------------------------------------------------------------------------------

def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion (95% by default); None for 0 trials."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact at the ends, not off by a rounding error
    high = 1.0 if successes == trials else min(1.0, center + half)
    return low, high


def rate(successes: int, trials: int) -> dict[str, Any]:
    """A proportion with its Wilson 95% interval and the counts behind it (value and bounds None for 0 trials)."""
    interval = wilson(successes, trials)
    return {"value": successes / trials if trials else None, "ci95": list(interval) if interval else None,
            "successes": successes, "trials": trials}


# ---- answers ---------------------------------------------------------------------------------------------------

@dataclass
class Answer:
    """One answer to judge: what produced it, the episode's messages, and the files it graded (None: the
    environment builds them from the messages). `recorded` is the truth a run recorded, for samples."""

    task: Task
    source: str
    kind: str
    messages: list[Message]
    files: dict[str, bytes] | None = None
    recorded: bool | None = None
    trajectory: str | None = None


class _Tree:
    """Stands in for a finished episode's sandbox: `Environment.submission` reads the work tree from it."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    async def read_tree(self) -> dict[str, bytes]:
        return dict(self.files)


SWAPPED = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
           ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


class _Mutation(ast.NodeTransformer):
    """One deterministic breakage inside the entry-point function: every `return` gives None, or the first
    integer literal (in source order) is off by one, or the first comparison is negated."""

    def __init__(self, kind: str) -> None:
        self.kind, self.done = kind, False

    def visit_Return(self, node: ast.Return) -> ast.AST:
        if self.kind == "return_none":
            self.done = True
            return ast.Return(value=ast.Constant(None))
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if self.kind == "off_by_one" and not self.done and type(node.value) is int:
            self.done = True
            return ast.Constant(node.value + 1)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if self.kind == "swap_comparison" and not self.done and type(node.ops[0]) in SWAPPED:
            self.done = True
            node.ops[0] = SWAPPED[type(node.ops[0])]()
        return self.generic_visit(node)


def mutants(code: str, entry_point: str) -> dict[str, str]:
    """Broken variants of `code`, by kind; a kind that finds nothing to change in `entry_point` is left out."""
    out: dict[str, str] = {}
    for kind in ("return_none", "off_by_one", "swap_comparison"):
        tree = ast.parse(code)
        mutation = _Mutation(kind)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == entry_point:
                mutation.visit(node)
        if mutation.done:
            out[kind] = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    return out


def _said(text: str) -> list[Message]:
    return [Message(role="assistant", content=text)]


def _code(code: str) -> list[Message]:
    return _said(f"```python\n{code.rstrip()}\n```")


def _repo(task: Task, overlay: dict[str, str] | None = None) -> dict[str, bytes]:
    """A repo_repair task's original repository, with `overlay`'s files written over it."""
    return {path: text.encode() for path, text in {**task.data["repo"], **(overlay or {})}.items()}


def reference_answers(env: Environment, task: Task) -> Iterator[Answer]:
    """The reference solution and its broken variants."""
    if env.name == "pyfunc":
        yield Answer(task, "reference", "reference", env.reference_turns(task))
        for kind, code in mutants(task.reference or "", task.data["entry_point"]).items():
            yield Answer(task, "broken", kind, _code(code))
    else:
        message = final_answer(env.reference_turns(task))
        yield Answer(task, "reference", "reference", _said(message), _repo(task, task.data["reference_files"]))
        yield Answer(task, "broken", "unfixed", _said(message), _repo(task))


def fooling_answers(env: Environment, task: Task) -> Iterator[Answer]:
    """The answers of `FOOLING` for one task (repo_repair: with the repository left as it was)."""
    for kind, make in FOOLING.items():
        yield Answer(task, "fooling", kind, _said(make(task)), _repo(task) if env.name == "repo_repair" else None)


def sample_answers(env: Environment, tasks: dict[str, Task], run_dir: Path,
                   skipped: Counter[str]) -> Iterator[Answer]:
    """Policy answers of a run directory's `trajectories.jsonl`; rows that cannot be used are counted in
    `skipped` by reason. A repo_repair work tree is rebuilt from the episode's `write_file` calls, so an episode
    that ran `bash` (which may have changed files unrecorded) is skipped."""
    path = run_dir / "trajectories.jsonl"
    if not path.is_file():
        raise RlaifError(f"{run_dir} has no trajectories.jsonl; pass --from a run directory written by "
                         "`rlaif train` or `rlaif eval`")
    rows = read_jsonl(path, ("task_id", "messages"), "trajectory", "rows are Trajectory records (rlaif/types.py)")
    for number, row in enumerate(rows, 1):
        try:  # run directories add their own fields (group_index, dropped) to the Trajectory's
            traj = Trajectory.model_validate({k: v for k, v in row.items() if k in Trajectory.model_fields})
        except ValidationError as err:
            raise RlaifError(f"{path}: row {number} is not a Trajectory ({err.errors()[0]['msg']}); pass a run "
                             "directory written by `rlaif train` or `rlaif eval`") from None
        task = tasks.get(traj.task_id)
        recorded = _passes(env, task, traj.reward) if task else None
        if task is None:
            skipped[f"task not in {env.name} (other env args?)"] += 1
        elif recorded is None:
            skipped["no recorded test reward (ungraded or infra_error)"] += 1
        elif env.name == "repo_repair" and any(t.call.name == "bash" for t in traj.tools):
            skipped["repo_repair episode ran bash: its work tree cannot be rebuilt"] += 1
        else:
            files = _replayed(task, traj) if env.name == "repo_repair" else None
            yield Answer(task, "sample", "sample", traj.messages, files, recorded, traj.id)


def _passes(env: Environment, task: Task, reward: RewardResult | None) -> bool | None:
    """Whether every grader of the environment scored 1.0 in `reward`; None when the reward says nothing."""
    names = [g.name for g in env.graders(task)]
    if reward is None or reward.status == "infra_error" or any(reward.components.get(n) is None for n in names):
        return None
    return all(reward.components[n] == 1.0 for n in names)


def _replayed(task: Task, traj: Trajectory) -> dict[str, bytes]:
    written = {t.call.arguments["path"]: t.call.arguments["content"] for t in traj.tools
               if t.call.name == "write_file" and t.status == "ok" and isinstance(t.call.arguments.get("content"), str)}
    return _repo(task, written)


def setting(config_path: Path, env_name: str) -> tuple[Environment, SandboxConfig]:
    """The environment (with the config's `env.args` when its `env.name` is this one) and the config's sandbox
    section. Call after the file was validated (`load_reward_config`): here it is only read."""
    if env_name not in ENVIRONMENTS:
        raise RlaifError(f"unknown --env {env_name!r}; calibrate needs an environment whose unit tests know the "
                         f"truth: {' or '.join(ENVIRONMENTS)}")
    data = yaml.safe_load(config_path.read_text()) or {}
    env = EnvConfig.model_validate(data.get("env", {}))
    return (load_environment(env_name, env.args if env.name == env_name else {}),
            SandboxConfig.model_validate(data.get("sandbox", {})))


def answer_set(env: Environment, limit: int, run_dir: Path | None) -> tuple[list[Answer], Counter[str]]:
    """References, broken variants and fooling answers of the first `limit` tasks (train, then test), and up to
    `limit` samples of `run_dir`; with the count of samples skipped, by reason."""
    tasks = env.tasks("train") + env.tasks("test")
    skipped: Counter[str] = Counter()
    answers = [a for task in tasks[:limit] for a in (*reference_answers(env, task), *fooling_answers(env, task))]
    if run_dir is not None:
        samples = list(sample_answers(env, {t.id: t for t in tasks}, run_dir, skipped))
        skipped["over --limit"] += max(0, len(samples) - limit)
        answers += samples[:limit]
    return answers, +skipped


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The per-answer rows as JSONL, written to a temporary file and renamed over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)


# ---- running ---------------------------------------------------------------------------------------------------

async def truth(env: Environment, answer: Answer, submission: Submission,
                ctx: GradeContext) -> tuple[bool | None, dict[str, float | None]]:
    """Whether the environment's graders pass the answer (None on infra_error), and their components; for a
    sample, what its run recorded."""
    from rlaif_rewards.components import grade

    if answer.recorded is not None:
        return answer.recorded, {}
    result = await grade(env, answer.task, submission, ctx)
    return _passes(env, answer.task, result), result.components


def rubric_for(judge: Judge, task: Task) -> Rubric | None:
    """The judge's own rubric file when it has one, else the task's (as a config `judge` component would)."""
    if judge.config.rubric:
        return Rubric.from_file(judge.config.rubric)
    return Rubric.model_validate(task.data["rubric"]) if "rubric" in task.data else None


async def run_answer(env: Environment, judge: Judge, answer: Answer, ctx: GradeContext) -> dict[str, Any]:
    """Grade one answer for the truth, then ask the judge; the answer's row of the report."""
    tree = _Tree(answer.files) if answer.files is not None else None
    submission = await env.submission(answer.task, answer.messages, tree)
    (passes, tests), verdict = await asyncio.gather(
        truth(env, answer, submission, ctx),
        judge.score(answer.task, submission.for_judge, rubric_for(judge, answer.task), answer.task.reference))
    usage = verdict.details.get("usage", {})
    return {
        "task_id": answer.task.id, "source": answer.source, "kind": answer.kind, "trajectory": answer.trajectory,
        "truth": None if passes is None else ("pass" if passes else "fail"), "tests": tests,
        "judge_status": verdict.status, "judge_score": verdict.total,
        "judge_pass": None if verdict.total is None else verdict.total >= PASS_THRESHOLD,
        "short_circuit": "short_circuit" in verdict.details,
        "reason": verdict.details.get("reason") or verdict.details.get("error") or "",
        "usage": usage,
        "cost_usd": cost_usd(judge.price, usage.get("input_tokens", 0), usage.get("output_tokens", 0)),
        "answer": submission.for_judge[:2000]}


async def run_all(env: Environment, judge: Judge, answers: list[Answer], sandbox: SandboxConfig,
                  advance: Callable[[], None]) -> list[dict[str, Any]]:
    """Every answer's row, in the order given; sandboxes are real and closed at the end, and so is the judge."""
    from rlaif.sandbox.pool import SandboxPools

    try:
        async with SandboxPools.from_config(sandbox, run_id="calibrate") as pools:
            ctx = GradeContext(pools)

            async def one(answer: Answer) -> dict[str, Any]:
                row = await run_answer(env, judge, answer, ctx)
                advance()
                return row

            return list(await asyncio.gather(*(one(a) for a in answers)))
    finally:
        await judge.close()


# ---- the report ------------------------------------------------------------------------------------------------

def confusion(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of the main rows: true/false passes and fails, failed verdicts, and answers of unknown truth.
    They add up to the number of rows."""
    counts = Counter({"true_pass": 0, "false_pass": 0, "true_fail": 0, "false_fail": 0, "failed_verdicts": 0,
                      "truth_unknown": 0})
    for row in rows:
        if row["truth"] is None:
            counts["truth_unknown"] += 1
        elif row["judge_pass"] is None:
            counts["failed_verdicts"] += 1
        else:
            counts[f"{'true' if row['judge_pass'] == (row['truth'] == 'pass') else 'false'}_"
                   f"{'pass' if row['judge_pass'] else 'fail'}"] += 1
    return dict(counts)


def report(rows: list[dict[str, Any]], judge: Judge, env_name: str, skipped: Counter[str]) -> dict[str, Any]:
    """Precision, recall and false-pass rate of the judge's pass verdicts on the main answers, with Wilson 95%
    intervals; the fooling answers' pass rates per kind; cost per verdict; failed verdicts."""
    main = [r for r in rows if r["source"] != "fooling"]
    c = confusion(main)
    tp, fp, tn, fn = c["true_pass"], c["false_pass"], c["true_fail"], c["false_fail"]
    called = [r for r in rows if r["judge_status"] != "infra_error" and not r["short_circuit"]]
    fooling: dict[str, Any] = {}
    for kind in FOOLING:
        of_kind = [r for r in rows if r["source"] == "fooling" and r["kind"] == kind]
        judged = [r for r in of_kind if r["judge_pass"] is not None]
        fooling[kind] = {"pass_rate": rate(sum(r["judge_pass"] for r in judged), len(judged)),
                         "answers": len(of_kind), "truly_failing": sum(r["truth"] == "fail" for r in of_kind),
                         "failed_verdicts": len(of_kind) - len(judged),
                         "short_circuit": sum(r["short_circuit"] for r in of_kind)}
    return {
        "env": env_name, "judge": judge.config.name, "model": judge.provider.name, "threshold": PASS_THRESHOLD,
        "answers": len(main), "by_source": dict(Counter(r["source"] for r in main)),
        "truth": dict(Counter(f"{r['source']}:{r['truth']}" for r in main)),
        "counts": c,
        "precision": rate(tp, tp + fp), "recall": rate(tp, tp + fn), "false_pass_rate": rate(fp, fp + tn),
        "fooling": fooling,
        "verdicts": len(rows), "failed_verdicts": sum(r["judge_status"] == "infra_error" for r in rows),
        "short_circuit": sum(r["short_circuit"] for r in rows),
        "cost_per_verdict": sum(r["cost_usd"] for r in called) / len(called) if called else None,
        "priced_verdicts": len(called),
        "cost_usd": judge.usage["cost_usd"], "judge_calls": judge.stats["calls"],
        "skipped_samples": dict(skipped),
    }
