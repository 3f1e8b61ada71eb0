"""Eliciting varied teacher trajectories: alternative system prompts, rewritten task statements, de-duplication.

A system-prompt variant is applied by a shallow copy of the environment whose `system_prompt` is replaced,
and a rewrite by a copy of the task whose `prompt` is replaced; both rely on the environment building its
opening from `system_prompt` and `task.prompt` (the default `Environment.prompt`). `check_opening` refuses
an environment that builds its opening otherwise, rather than silently collecting the original prompts.
A rewrite changes only the statement the teacher reads: the task's tests, reference and data stay its own.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path

from rlaif.env import Environment
from rlaif.errors import RlaifError
from rlaif.types import Message, Task

REWRITE_SYSTEM = "You restate programming problems. You never solve them."
REWRITE_REQUEST = (
    "Restate the problem below in different words, as a new problem statement for a programmer. Keep every name, "
    "function signature, type, value and example exactly as written, and copy every code block and every "
    "`backticked` span verbatim. Do not solve it, do not add hints. Reply with the restated problem only.\n\n"
    "<problem>\n{prompt}\n</problem>"
)
VERBATIM = re.compile(r"```.*?```|`[^`\n]+`", re.S)
DUPLICATE_RATIO = 0.95


def read_system_prompts(path: Path) -> list[str]:
    """The prompts of a text file, separated by lines holding only `---`; empty ones are skipped."""
    if not path.is_file():
        raise RlaifError(f"--system-prompts file {path} does not exist; give a text file of prompts separated by "
                         "lines holding only ---")
    prompts, current = [], []
    for line in [*path.read_text().splitlines(), "---"]:
        if line.strip() == "---":
            if "\n".join(current).strip():
                prompts.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    if not prompts:
        raise RlaifError(f"--system-prompts file {path} holds no prompt")
    return prompts


def with_system_prompt(env: Environment, system_prompt: str | None) -> Environment:
    """The environment with another system prompt (the same object for None: the env's own)."""
    if system_prompt is None:
        return env
    variant = copy.copy(env)
    variant.system_prompt = system_prompt  # an instance attribute shadows the class's
    return variant


def check_opening(env: Environment, task: Task, system_prompt: str | None, prompt: str | None) -> None:
    """RlaifError unless `env` opens `task` with this system prompt and user prompt (None: not replaced)."""
    opening = env.prompt(task)
    if system_prompt is not None and not (opening and opening[0].role == "system"
                                          and opening[0].content == system_prompt):
        raise RlaifError(f"environment {env.name!r} builds its own opening messages, so --system-prompts cannot "
                         "replace its system prompt; drop --system-prompts for it")
    if prompt is not None and not any(m.role == "user" and prompt in m.content for m in opening):
        raise RlaifError(f"environment {env.name!r} builds its own opening messages, so a rewritten task prompt "
                         "would not reach the teacher; drop --rewrites for it")


def rewrite_messages(prompt: str) -> list[Message]:
    """The request that asks a teacher to restate a task's prompt."""
    return [Message(role="system", content=REWRITE_SYSTEM),
            Message(role="user", content=REWRITE_REQUEST.format(prompt=prompt))]


def rewrite_problem(original: str, rewritten: str) -> str | None:
    """Why a rewrite is unusable (it is empty, or lost a code block or backticked span), or None."""
    if not rewritten.strip():
        return "the rewrite is empty"
    lost = [span for span in VERBATIM.findall(original) if span.strip("`").strip() not in rewritten]
    return f"the rewrite lost {lost[0][:80]!r}" if lost else None


def is_near_duplicate(text: str, kept: list[str], ratio: float = DUPLICATE_RATIO) -> bool:
    """Whether `text` is identical or near-identical (difflib ratio >= `ratio`) to one of `kept`."""
    for other in kept:
        matcher = difflib.SequenceMatcher(None, text, other)
        if text == other or (matcher.real_quick_ratio() >= ratio and matcher.quick_ratio() >= ratio
                             and matcher.ratio() >= ratio):
            return True
    return False
