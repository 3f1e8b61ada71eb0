"""`rlaif env check`: prove an environment sound without any model.

Every task's reference solution, replayed through the real agent loop and the real graders, must earn
full reward; an empty answer must earn none. Graders that need a judge are skipped with a note until a
judge is configured. An environment whose references make claims it can check without a model (judged_qa's
review references say how a change alters a function's output) defines `reference_problem(task) -> str | None`;
each problem it names is a failure, so a reference a judge would grade against is never simply trusted.
An answer that fails on infrastructure is a failure too, and is counted by reason in `infra_skipped`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from rlaif.env import Environment, GradeContext
from rlaif.eval.evaluation import evaluate
from rlaif.policies.endpoints import ReplayPolicy, Sampling
from rlaif.types import Message, Task, Trajectory


async def check_environment(env: Environment, tasks: list[Task], ctx: GradeContext, concurrency: int = 8,
                            progress: Callable[[Trajectory], None] = lambda t: None,
                            pass_threshold: float = 1.0) -> dict[str, Any]:
    """Grade each task's reference (must reach `pass_threshold`) and an empty answer (must earn 0)."""
    sampling = Sampling()
    reference = await evaluate(env, tasks, lambda t: ReplayPolicy(env.reference_turns(t)), ctx, sampling,
                               concurrency=concurrency, on_done=progress)
    empty = await evaluate(env, tasks, lambda t: ReplayPolicy([Message(role="assistant", content="")]), ctx,
                           sampling, concurrency=concurrency, on_done=progress)
    reference_problem = getattr(env, "reference_problem", None)
    claims = [(task, reference_problem(task)) for task in tasks] if reference_problem else []
    failures = [{"task": task.id, "answer": "reference", "problem": "reference claim is false", "detail": problem}
                for task, problem in claims if problem]
    notes, skipped, infra = set(), 0, Counter()
    reference_passed = empty_passed = 0
    for task, ref, nothing in zip(tasks, reference, empty, strict=True):
        for what, traj in (("reference", ref), ("empty", nothing)):
            reason = traj.infra_error()
            if reason:
                judge_note = traj.reward and traj.reward.details.get("judge", {}).get("note")
                if judge_note:
                    notes.add(judge_note)
                    skipped += 1
                    continue
                infra[reason] += 1
                failures.append({"task": task.id, "answer": what, "problem": reason,
                                 "detail": traj.error or str(traj.reward.details if traj.reward else "")[:500]})
                continue
            total = traj.reward.total
            if what == "reference":
                reference_passed += total >= pass_threshold
                if total < pass_threshold:
                    failures.append({"task": task.id, "answer": what, "problem": f"reference earned {total:.3f}",
                                     "detail": _tests_detail(traj)})
            else:
                empty_passed += total > 0.0
                if total > 0.0:
                    failures.append({"task": task.id, "answer": what, "problem": f"empty answer earned {total:.3f}",
                                     "detail": _tests_detail(traj)})
    return {"env": env.name, "tasks": len(tasks), "reference_passed": reference_passed, "empty_passed": empty_passed,
            "judge_skipped": skipped, "infra_skipped": dict(infra),
            "references_checked": len(claims), "failures": failures, "notes": sorted(notes)}


def _tests_detail(traj: Trajectory) -> str:
    details = traj.reward.details if traj.reward else {}
    tests = details.get("tests", {})
    return str(tests.get("tests", tests))[:500] + " " + str(tests.get("log", ""))[-500:]
