"""repo_repair: multi-turn, SWE-style repair of a small Python repository with one injected bug.

The agent gets the buggy repository in /work, a problem statement, and the tools bash, read_file,
write_file and submit. When it submits (or runs out of turns), the work tree is graded by the task's
hidden tests (FAIL_TO_PASS and PASS_TO_PASS, SWE-bench's vocabulary) in a fresh sandbox, after the
tamper-proof staging of `rlaif_rewards.unit_tests`. Tasks are generated from a seed
(`generator.py`); train and test splits share no source module.
"""

from __future__ import annotations

from rlaif.env import EnvArgs, Environment, Grader, Submission, ToolOutput, ToolSpec
from rlaif.tools import SANDBOX_TOOLS, run_sandbox_tool
from rlaif.types import Message, Task, ToolCall, final_answer
from rlaif_rewards.unit_tests import UnitTests

from .generator import generate_tasks

INSTRUCTIONS = (
    "The repository in the current directory has a bug, reported below. Find it and fix it with the tools "
    "(bash, read_file, write_file); run the tests with `python3 -m pytest -q`. Call submit when the fix is done.\n\n"
    "Issue:\n{statement}"
)


class RepoRepairArgs(EnvArgs):
    seed: int = 0
    count: int = 24
    """How many tasks to generate (train and test together)."""
    mode: str = "all"
    """`all`: 1 only when every FAIL_TO_PASS and PASS_TO_PASS test passes (SWE-bench's "resolved");
    `fraction`: the share that pass."""
    tool_timeout_s: float = 30.0
    test_timeout_s: float = 60.0


class RepoRepair(Environment):
    name = "repo_repair"
    max_turns = 20
    system_prompt = "You are a careful software engineer working in a Python repository through tools."
    Args = RepoRepairArgs

    def __init__(self, **args) -> None:
        super().__init__(**args)
        self._tasks = [self._task(t) for t in generate_tasks(self.args.seed, self.args.count)]

    def _task(self, t) -> Task:
        return Task(id=t.id, env=self.name, split=t.split, prompt=INSTRUCTIONS.format(statement=t.problem_statement),
                    reference=t.reference_patch,
                    data={"repo": t.repo, "tests": t.tests, "fail_to_pass": list(t.fail_to_pass),
                          "pass_to_pass": list(t.pass_to_pass), "reference_files": t.reference_files})

    def tasks(self, split: str) -> list[Task]:
        return [t for t in self._tasks if t.split == split]

    def tools(self, task: Task) -> list[ToolSpec]:
        return SANDBOX_TOOLS

    async def setup(self, task: Task, sandbox) -> None:
        await sandbox.write_files(task.data["repo"])

    async def call_tool(self, task: Task, sandbox, call: ToolCall) -> ToolOutput:
        return await run_sandbox_tool(sandbox, call, timeout_s=self.args.tool_timeout_s)

    def graders(self, task: Task) -> list[Grader]:
        expected = task.data["fail_to_pass"] + task.data["pass_to_pass"]
        return [UnitTests(self.image_for(task), task.data["tests"], expected, original=task.data["repo"],
                          mode=self.args.mode, timeout_s=self.args.test_timeout_s)]

    async def submission(self, task: Task, messages: list[Message], sandbox) -> Submission:
        """The work tree, and for judges its diff against the task's original with the final message: the last
        message of a repair is usually an empty `submit` call, which says nothing of the fix."""
        return judged_submission(task, messages, await sandbox.read_tree() if sandbox is not None else {})

    def reference_turns(self, task: Task) -> list[Message]:
        """Write each fixed file, then submit: one assistant turn with several tool calls."""
        calls = [ToolCall(id=f"ref_{i}", name="write_file", arguments={"path": path, "content": content})
                 for i, (path, content) in enumerate(sorted(task.data["reference_files"].items()))]
        calls.append(ToolCall(id="ref_submit", name="submit", arguments={}))
        return [Message(role="assistant", content="Applying the fix.", tool_calls=calls)]


MAX_DIFF_CHARS = 20_000
"""A longer diff is cut, with a note, so that one sprawling rewrite cannot blow up the judge's prompt."""


def judged_submission(task: Task, messages: list[Message], files: dict[str, bytes]) -> Submission:
    """The submission of a repo_repair episode: its work tree, and what a judge sees of it (the diff of the work
    tree against the task's original repository, then the final message)."""
    submission = Submission(messages=messages, files=files)
    diff = submission.diff({path: text.encode() for path, text in task.data["repo"].items()})
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + f"\n[diff cut at {MAX_DIFF_CHARS} of {len(diff)} characters]\n"
    message = final_answer(messages)
    judged = (f"The changes made to the repository (a unified diff against the original):\n{diff or '(none)'}\n"
              f"The final message:\n{message or '(empty)'}") if diff or message else ""  # nothing: 0, no call
    return submission.model_copy(update={"judged": judged})

