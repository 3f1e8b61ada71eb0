"""The environment interface: the one module of rlaif an environment author needs to read.

An environment
- yields tasks for a split (`train` / `test`, disjoint and seeded): `tasks(split)`;
- names the sandbox image a task starts from: `image_for(task)`;
- writes the task into a fresh sandbox: `setup(task, sandbox)`;
- opens the conversation: `prompt(task)`;
- offers tools (functions with JSON-schema arguments) and runs them: `tools(task)`, `call_tool(...)`;
- decides when an episode ends: `max_turns`, and a tool result with `done=True` (e.g. `submit`);
- turns a finished episode into what is graded: `submission(task, messages, sandbox)`;
- declares its graders: `graders(task)`;
- replays its reference solution as an assistant: `reference_turns(task)` (used by `rlaif env check`
  and by the `reference` teacher).

It never sees the learner or the policy: the agent loop (`rlaif.rollout.agent`) drives it, the same way for the
student under training and for a teacher such as Claude. Single-turn is `max_turns = 1` and no tools.

Arguments from config (`env.args`) are validated against the nested `Args` model: declare one to take
any. A minimal environment (see `examples/plugin-env/`) is a few dozen lines.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlaif.errors import RlaifError
from rlaif.types import Message, RewardResult, Task, ToolCall, final_answer

if TYPE_CHECKING:
    from rlaif.sandbox.base import Sandbox

Split = Literal["train", "test"]


class ToolSpec(BaseModel):
    """A function the model may call: name, what it does, and a JSON schema for its arguments."""

    name: str
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_openai(self) -> dict[str, Any]:
        """The OpenAI / chat-template form: `{"type": "function", "function": {...}}`."""
        return {"type": "function", "function": self.model_dump()}


class ToolOutput(BaseModel):
    """What a tool call returns to the model. `done=True` ends the episode after this result."""

    output: str
    done: bool = False
    status: str = "ok"
    """`ok`, `error` (bad arguments, unknown tool: the model's mistake), or an exec status."""


class Submission(BaseModel):
    """What an episode produced, as graders see it: the conversation and the files to grade."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    messages: list[Message]
    files: dict[str, bytes] = Field(default_factory=dict)
    """Paths relative to the work directory, as the task's tests expect them."""
    judged: str | None = None
    """What a judge sees of the episode when the final answer is not the work (repo_repair: the diff of the work
    tree against the task's original, then the final message); None: the final answer."""

    @property
    def answer(self) -> str:
        """The text of the last assistant message ("" when there is none)."""
        return final_answer(self.messages)

    @property
    def for_judge(self) -> str:
        """The text a judge scores: `judged` when the environment set it, else the final answer."""
        return self.answer if self.judged is None else self.judged

    def diff(self, original: Mapping[str, bytes]) -> str:
        """A unified diff from `original` to the submitted files ("" when there are none), leaving out what running
        tests leaves behind (`__pycache__`, `.pyc`, `.pytest_cache`), which is no part of the work."""
        from rlaif.sandbox.treediff import tree_diff

        if not self.files:
            return ""
        scratch = re.compile(r"(^|/)(__pycache__|\.pytest_cache)/|\.pyc$")
        return tree_diff(original, {path: data for path, data in self.files.items() if not scratch.search(path)})


class GradeContext:
    """What graders may use: the sandbox pools (fresh sandboxes for tests), the judges, and config's components.

    Built by the agent loop's caller; graders never create their own pools.
    """

    def __init__(self, pools: Any, judges: Mapping[str, Any] | None = None, components: list[Any] = ()) -> None:
        self.pools = pools
        self.judges = dict(judges or {})
        self.components = list(components)
        """ComponentConfig entries from `reward.components`: graders added to every task."""


class Grader:
    """Scores a submission. Subclasses implement `grade`; `name` and `weight` place it in the total.

    A grader that cannot compute a score returns `RewardResult(status="infra_error")`: never 0, never 1.
    """

    name: str = "grader"
    weight: float = 1.0
    gate: str | None = None
    """Name of another component that must score at least `gate_threshold` for this one to run."""
    gate_threshold: float = 1.0

    async def grade(self, task: Task, submission: Submission, ctx: GradeContext) -> RewardResult:
        raise NotImplementedError


class EnvArgs(BaseModel):
    """Base of an environment's `Args`: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Environment:
    """Base class of every environment. Subclass it, set `name`, implement `tasks` and `graders`."""

    name: ClassVar[str] = ""
    image: ClassVar[str] = "rlaif/base:latest"
    """The sandbox image a task starts from, unless `image_for` says otherwise."""
    max_turns: ClassVar[int] = 1
    """Model turns per episode; 1 = single-turn."""
    system_prompt: ClassVar[str | None] = None
    Args: ClassVar[type[EnvArgs]] = EnvArgs

    def __init__(self, **args: Any) -> None:
        try:
            self.args = self.Args(**args)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise RlaifError(f"environment {self.name!r}: bad argument env.args.{key}: {first['msg']}; "
                             f"valid arguments: {', '.join(self.Args.model_fields) or 'none'}") from None

    # ---- tasks ----------------------------------------------------------------------------------
    def tasks(self, split: Split) -> list[Task]:
        """Every task of a split. Splits must be disjoint; the same args give the same tasks."""
        raise NotImplementedError

    def image_for(self, task: Task) -> str:
        return task.data.get("image", self.image)

    # ---- the episode ----------------------------------------------------------------------------
    def prompt(self, task: Task) -> list[Message]:
        """The opening messages. Default: the system prompt (if any) and the task's prompt."""
        opening = [Message(role="system", content=self.system_prompt)] if self.system_prompt else []
        return [*opening, Message(role="user", content=task.prompt)]

    def tools(self, task: Task) -> list[ToolSpec]:
        return []

    async def setup(self, task: Task, sandbox: Sandbox) -> None:
        """Prepare the task's sandbox before the first turn (write its files). Default: nothing."""

    async def call_tool(self, task: Task, sandbox: Sandbox, call: ToolCall) -> ToolOutput:
        """Run one tool call. Unknown tools and bad arguments are the model's errors, not exceptions."""
        return ToolOutput(output=f"error: unknown tool {call.name!r}", status="error")

    async def submission(self, task: Task, messages: list[Message], sandbox: Sandbox | None) -> Submission:
        """What is graded. Default: the sandbox's work tree (or nothing, without a sandbox)."""
        files = await sandbox.read_tree() if sandbox is not None else {}
        return Submission(messages=messages, files=files)

    # ---- grading --------------------------------------------------------------------------------
    def graders(self, task: Task) -> list[Grader]:
        raise NotImplementedError

    def reference_turns(self, task: Task) -> list[Message]:
        """The assistant turns that solve the task, for replay. Default: the reference as one answer."""
        if task.reference is None:
            raise RlaifError(f"task {task.id} has no reference solution")
        return [Message(role="assistant", content=task.reference)]

    def needs_sandbox(self, task: Task) -> bool:
        """Whether the episode itself needs a sandbox (tools run there). Graders get their own."""
        return bool(self.tools(task))


def seeded_split(key: str, test_fraction: float, seed: int = 0) -> Split:
    """`test` for a seeded-hash share `test_fraction` of keys, else `train`: the same key always lands on the
    same side, whatever other tasks exist, so adding tasks never moves one across the split."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S)


def extract_code(text: str) -> str:
    """The code in a model's answer: the last fenced block (```python ...```), else the raw text."""
    blocks = FENCE.findall(text)
    return blocks[-1] if blocks else text
