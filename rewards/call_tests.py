"""Grading by calling the submission and comparing what it returns, from a process it cannot reach.

For tasks whose tests call a function and compare its result (pyfunc's generated tasks, HumanEval's
`check(candidate)`). The submission runs alone in its own process, as the sandbox's commands' uid, and answers
calls through a narrow channel in a type-tagged encoding (`call_harness.py`). The tests never enter its process
or its filesystem:
- `cases` (fixed arguments, an expected value each): the calls go in on its stdin, the answers stream back on its
  stdout, and this grader compares them, in the rlaif process, type-strictly, with the expected values that never
  left it;
- `check` (HumanEval): the test runs in a trusted harness inside the sandbox under another uid (a paired exec),
  which receives it on its stdin, calls the submission through a pipe, and prints the verdict that the sandbox's
  executor collects.
Nothing the submission does reaches a verdict: exiting early or with a forged status, printing a forged verdict,
leaving a process behind, patching the runner in its own process, reading the caller's frame, or returning an
object whose `__eq__` always answers True (`tests/test_reward_hacking.py` tries each, on both backends).

Each answer gets a sandbox of its own. Sandboxes are recycled: after an answer every process in it is killed and
its scratch folders are emptied, and it is reused only when the reset leaves nothing behind (else a fresh one is
started), so nothing of one answer is visible to the next, and grading pays for one process start per answer.

Statuses: `ok`, the fraction (or all-or-nothing, `mode`) of cases passed; `policy_error`, still a score (0 for
what did not run), when the submission timed out, crashed, exited, sent bytes that are not the protocol, returned
a value the encoding does not carry, or could not be imported; `infra_error` (no score) when the sandbox failed
or the task's own test passes a value the channel cannot carry.
"""

from __future__ import annotations

import ast
import marshal
from pathlib import Path
from typing import Any, Literal

from rlaif.env import GradeContext, Grader, Submission
from rlaif.sandbox.base import ExecResult
from rlaif.types import RewardResult, Task
from rlaif_rewards.call_harness import CALLEE_END, ENDING, LEN, Malformed, reply, same

SOURCE = Path(__file__).with_name("call_harness.py").read_text()
HARNESS = ["python3", "-I", "-S", "-c", SOURCE, "harness"]
CALLEE = ["python3", "-I", "-S", "-c", SOURCE[:SOURCE.index("\n" + CALLEE_END)] + "\ncallee()\n"]


def call_cases(entry_point: str, cases: list[tuple[tuple, Any]]) -> dict[str, Any]:
    """A `cases` spec for task data (JSON): each case's arguments and expected value as Python literals."""
    return {"entry_point": entry_point, "cases": [{"args": repr(tuple(args)), "expected": repr(expected)}
                                                  for args, expected in cases]}


def call_check(entry_point: str, check: str, helpers: str = "") -> dict[str, Any]:
    """A `check` spec: source defining `check(candidate)` (HumanEval's form), and the task's helper definitions."""
    return {"entry_point": entry_point, "check": check, "helpers": helpers}


class CallTests(Grader):
    """Calls `entry_point` of the submission's `solution.py` with the spec's cases (or runs its check).

    `call_timeout_s` bounds each call and the import, `memory_mb` the submission's address space, `timeout_s` the
    whole grading; `rel_tol`/`abs_tol` let floats differ; `site` gives the submission the image's site-packages
    (off: the standard library only, and a faster start)."""

    name = "tests"

    def __init__(self, image: str, spec: dict[str, Any], *, mode: Literal["fraction", "all"] = "fraction",
                 timeout_s: float = 20.0, call_timeout_s: float = 5.0, memory_mb: int = 256, rel_tol: float = 0.0,
                 abs_tol: float = 0.0, site: bool = False, weight: float = 1.0) -> None:
        self.image, self.mode, self.timeout_s, self.weight = image, mode, timeout_s, weight
        self.tolerance = (rel_tol, abs_tol)
        self.setup = {"module": "solution", "entry_point": spec["entry_point"], "call_timeout_s": call_timeout_s,
                      "memory_mb": memory_mb, "site": site}
        self.check = {k: spec[k] for k in ("check", "helpers") if k in spec} if "check" in spec else None
        self.cases = [] if self.check else [(ast.literal_eval(c["args"]), ast.literal_eval(c["expected"]))
                                            for c in spec["cases"]]

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        code = submission.files.get("solution.py")
        if code is None:
            return self._result("policy_error", [("import_error", "the submission has no solution.py")], {})
        setup = {**self.setup, "files": {"solution.py": code}}  # the callee writes it: no extra process start
        if self.check is not None:
            argv, peer, stdin = HARNESS, CALLEE, marshal.dumps({**setup, **self.check}, 4)
        else:
            argv, peer = CALLEE, None
            stdin = b"".join(_frame(marshal.dumps(m, 4)) for m in [setup, *((args, {}) for args, _ in self.cases)])
        run = await ctx.pools.get(self.image).run(argv, stdin=stdin, timeout=self.timeout_s, recycle=True, peer=peer,
                                                  raw=True, until_exit=True, preload=True,
                                                  max_output=(1 << 20) + 64 * len(self.cases))
        if run.status == "infra_error":
            return RewardResult(status="infra_error", details={"error": run.error or "sandbox failed"})
        return self._checked(task, run) if self.check is not None else self._compared(run)

    def _compared(self, run: ExecResult) -> RewardResult:
        """Outcomes of `cases` from the callee's stream of answers: the first answer says it imported."""
        answers, outcomes = _frames(run.output), []
        for i, payload in enumerate(answers[:len(self.cases) + 1]):
            try:
                kind, value = reply(payload) if payload is not None else ("malformed", "a frame cut short")
            except Malformed as err:
                kind, value = "malformed", str(err)
            if i == 0:
                if kind != "ready":
                    outcomes.append((kind if kind == "import_error" else "malformed", str(value)))
                    break
                continue
            if kind == "value":
                outcomes.append(("passed" if same(value, self.cases[i - 1][1], *self.tolerance) else "failed", ""))
            elif kind in ("raised", "timeout", "unencodable"):
                outcomes.append((kind, str(value)))
            else:
                outcomes.append(("malformed", f"an answer of kind {kind}"))
            if outcomes[-1][0] in ENDING:
                break
        if len(outcomes) < len(self.cases) and not (outcomes and outcomes[-1][0] in ENDING):
            ended = "timeout" if run.status == "timeout" else "crashed"
            outcomes.append((ended, f"the submission's process ended ({run.status}) before answering"))
        return self._result("ok", outcomes, {"run_status": run.status})

    def _checked(self, task: Task, run: ExecResult) -> RewardResult:
        if run.status in ("timeout", "oom"):  # the harness is bounded: the submission's calls used the time up
            return self._result("policy_error", [(run.status, "the whole check ran out of it")], {})
        try:
            verdict = marshal.loads(run.output) if run.status == "ok" else None
        except (EOFError, ValueError, TypeError):
            verdict = None
        outcomes = verdict.get("outcomes") if isinstance(verdict, dict) else None
        if not isinstance(outcomes, list) or not outcomes or not isinstance(outcomes[0], dict):
            why = verdict.get("task_error") if isinstance(verdict, dict) else f"the harness ended {run.status}"
            return RewardResult(status="infra_error", details={"error": f"task {task.id}: {why}",
                                                               "log": run.stderr[-2000:]})
        first = outcomes[0]
        return self._result("ok", [(str(first.get("outcome")), str(first.get("detail", "")))],
                            {"calls": verdict.get("calls", 0)})

    def _result(self, status: str, outcomes: list[tuple[str, str]], details: dict[str, Any]) -> RewardResult:
        count = len(self.cases) or 1
        kinds = [kind for kind, _ in outcomes][:count] + ["not run"] * max(0, count - len(outcomes))
        if any(k in ENDING for k in kinds):
            status = "policy_error"
        passed = kinds.count("passed")
        score = float(passed == count) if self.mode == "all" else passed / count
        notes = [detail for _, detail in outcomes if detail]
        details = {**details, "tests": {f"case_{i}": kind for i, kind in enumerate(kinds)},
                   **({"detail": notes[0][:500]} if notes else {})}
        return RewardResult(status=status, total=score, components={self.name: score}, details=details)


def _frame(payload: bytes) -> bytes:
    return LEN.pack(len(payload)) + payload


def _frames(data: bytes) -> list[bytes | None]:
    """The frames of a stream; a last one cut short is None."""
    frames: list[bytes | None] = []
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            frames.append(None)
            break
        (size,) = LEN.unpack_from(data, at)
        if at + 4 + size > len(data):
            frames.append(None)
            break
        frames.append(data[at + 4:at + 4 + size])
        at += 4 + size
    return frames
