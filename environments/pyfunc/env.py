"""pyfunc: single-turn Python function synthesis, graded by calling the answer's function from a process it
cannot reach (`rlaif_rewards.call_tests`): its tests and expected values never enter the answer's process.

Tasks come from a HumanEval-format file (`data`: JSONL or JSONL.gz with task_id, prompt,
canonical_solution, test, entry_point) or are generated from a seed (`generated` > 0): small
arithmetic and string functions with several asserts each, split into train and held-out tasks that
share no function. The answer's code is the last fenced block (or the raw text); for HumanEval, an
answer that does not define the entry point is taken as the body that continues the prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rlaif.core.jsonl import read_jsonl
from rlaif.env import EnvArgs, Environment, Grader, Submission, extract_code, seeded_split
from rlaif.errors import RlaifError
from rlaif.types import Message, Task, final_answer
from rlaif_rewards.call_tests import CallTests, call_cases, call_check

from .generated import generate_functions

HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


class PyFuncArgs(EnvArgs):
    data: str | None = None
    """A HumanEval-format JSONL(.gz) file. When unset, tasks are generated."""
    generated: int = 100
    """How many tasks to generate when no data file is given."""
    catalogue: Literal["basic", "wide"] = "basic"
    """The generator's families: `basic` (116 functions) or `wide` (646, for held-out splits in the hundreds)."""
    test_fraction: float = 0.2
    """Share of tasks held out as the `test` split (chosen by a seeded hash of the task id)."""
    seed: int = 0
    mode: str = "fraction"
    """`fraction` of tests passed, or `all` (1 only when every test passes)."""
    timeout_s: float = 20.0


class PyFunc(Environment):
    name = "pyfunc"
    max_turns = 1
    system_prompt = "You write correct, self-contained Python functions. Reply with code in a ```python block."
    Args = PyFuncArgs

    def __init__(self, **args) -> None:
        super().__init__(**args)
        self._tasks = self._load()

    def tasks(self, split: str) -> list[Task]:
        return [t for t in self._tasks if t.split == split]

    def _load(self) -> list[Task]:
        if self.args.data:
            rows = read_humaneval(Path(self.args.data))
            return [self._humaneval_task(row) for row in rows]
        return [self._generated_task(fn) for fn in generate_functions(self.args.generated, self.args.seed,
                                                                       catalogue=self.args.catalogue)]

    def _split(self, key: str) -> str:
        return seeded_split(key, self.args.test_fraction, self.args.seed)

    def _humaneval_task(self, row: dict) -> Task:
        # HumanEval's check() may call helpers from the prompt (poly, encode_cyclic): the prompt is the helpers.
        prompt = f"Complete this Python function:\n\n```python\n{row['prompt']}```"
        return Task(id=row["task_id"], env=self.name, split=self._split(row["task_id"]), prompt=prompt,
                    reference=row["prompt"] + row["canonical_solution"],
                    data={"calls": call_check(row["entry_point"], row["test"], helpers=row["prompt"]),
                          "entry_point": row["entry_point"], "stub": row["prompt"]})

    def _generated_task(self, fn: dict) -> Task:
        prompt = f"Write a Python function `{fn['signature']}` that {fn['doc']}"
        return Task(id=f"pyfunc/{fn['name']}", env=self.name, split=self._split(fn["name"]), prompt=prompt,
                    reference=fn["reference"],
                    data={"calls": call_cases(fn["name"], fn["cases"]), "entry_point": fn["name"]})

    async def submission(self, task: Task, messages: list[Message], sandbox) -> Submission:
        code = extract_code(final_answer(messages))
        stub = task.data.get("stub")
        if stub and f"def {task.data['entry_point']}" not in code:
            code = stub + code
        return Submission(messages=messages, files={"solution.py": code.encode()})

    def graders(self, task: Task) -> list[Grader]:
        return [CallTests(self.image_for(task), task.data["calls"], mode=self.args.mode, timeout_s=self.args.timeout_s)]

    def reference_turns(self, task: Task) -> list[Message]:
        return [Message(role="assistant", content=f"```python\n{task.reference}\n```")]


def read_humaneval(path: Path) -> list[dict]:
    """Rows of a HumanEval-format JSONL or JSONL.gz file; a malformed row is an error naming its line."""
    if not path.is_file():
        raise RlaifError(f"pyfunc data file {path} does not exist; pass env.args.data=PATH of a JSONL(.gz) file")
    rows = read_jsonl(path, HUMANEVAL_FIELDS, "task", f"HumanEval rows have {', '.join(HUMANEVAL_FIELDS)}")
    if not rows:
        raise RlaifError(f"{path} holds no tasks")
    return rows
