"""The collected dataset on disk: rows of kept teacher trajectories and the ledger of every attempt.

    OUT/collect.json     the collection's identity ({"env", "teacher", "system_prompts"}), from the first run
    OUT/train.jsonl      one kept trajectory per line (`trajectory_row`), readable by
                         `datasets.load_dataset("json", data_files=str(OUT / "train.jsonl"), split="train")`
    OUT/attempts.jsonl   the ledger: {"id", "status": kept|rejected|failed|duplicate, "reward", "reason"}
                         per finished attempt; a re-run skips every id in it
    OUT/rewrites.jsonl   teacher rewrites of task prompts, reused by a re-run
    OUT/summary.json     counts and cost, written atomically at the end of each run

Every row has every field with the same types (Arrow needs one schema): each message has `role`, `content`,
`tool_calls` (OpenAI form, arguments as a JSON string) and `tool_call_id` ("" when none); `tools` is the
JSON string of the tool schemas the episode offered.

Crash safety: a kept row is appended and fsynced to train.jsonl before its ledger line. `CollectionDir.open`
drops a torn last line of any JSONL file and gives every row that lacks a ledger line a `kept` one, so a
run killed at any instant and run again loses nothing and writes nothing twice. One process, one thread
writes a collection directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.policies.endpoints import to_openai_message
from rlaif.types import Message, Trajectory

STATUSES = ("kept", "rejected", "failed", "duplicate")


def attempt_id(task_id: str, task_variant: str, system_variant: int, sample: int) -> str:
    """The stable key of one attempt, and of its row."""
    return f"{task_id}|{task_variant}|{system_variant}|{sample}"


def row_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in OpenAI chat form with all four keys on every message."""
    return [{"role": m["role"], "content": m["content"] or "", "tool_calls": m.get("tool_calls", []),
             "tool_call_id": m.get("tool_call_id") or ""} for m in map(to_openai_message, messages)]


def trajectory_row(traj: Trajectory, *, row_id: str, env: str, tools: list[dict[str, Any]],
                   provenance: dict[str, Any]) -> dict[str, Any]:
    """One train.jsonl row for a graded trajectory (its reward must have a total)."""
    return {"id": row_id, "task_id": traj.task_id, "env": env, "messages": row_messages(traj.messages),
            "tools": json.dumps(tools), "reward": float(traj.reward.total),
            "components": {k: None if v is None else float(v) for k, v in traj.reward.components.items()},
            "provenance": provenance}


def assistant_text(row: dict[str, Any]) -> str:
    """What the teacher wrote in a row (answers and tool calls), whitespace-normalised."""
    parts = [m["content"] + "".join(c["function"]["name"] + c["function"]["arguments"] for c in m["tool_calls"])
             for m in row["messages"] if m["role"] == "assistant"]
    return " ".join(" ".join(parts).split())


class CollectionDir:
    """A collection directory, reconciled on open (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.train, self.ledger_file, self.rewrites_file = (path / "train.jsonl", path / "attempts.jsonl",
                                                            path / "rewrites.jsonl")
        self.ledger: dict[str, dict[str, Any]] = {}
        self.kept_texts: dict[str, list[str]] = {}
        """Task id -> `assistant_text` of each kept row (what de-duplication compares against)."""
        self.rewrites: dict[tuple[str, str], dict[str, Any]] = {}
        """(task id, task variant) -> {"task_id", "variant", "prompt", "problem"}; problem: why it is unusable."""

    @classmethod
    def open(cls, path: Path, identity: dict[str, Any]) -> CollectionDir:
        """Create or resume `path`; RlaifError when it was collected with another identity (env, teacher...)."""
        found = check_identity(path, identity)
        path.mkdir(parents=True, exist_ok=True)
        if found is None:
            _write_atomic(path / "collect.json", identity)
        out = cls(path)
        out.train.touch()  # there even when nothing is kept
        rows = _read_jsonl(out.train)
        out.ledger = {line["id"]: line for line in _read_jsonl(out.ledger_file)}
        out.rewrites = {(r["task_id"], r["variant"]): r for r in _read_jsonl(out.rewrites_file)}
        for row in rows:
            out.kept_texts.setdefault(row["task_id"], []).append(assistant_text(row))
            if row["id"] not in out.ledger:
                out.record(row["id"], "kept", row["reward"], "recovered: row written, run ended before its ledger line")
        return out

    def keep(self, row: dict[str, Any], reason: str = "") -> None:
        """Append a kept row, then its ledger line; both on disk on return."""
        _append(self.train, row)
        self.kept_texts.setdefault(row["task_id"], []).append(assistant_text(row))
        self.record(row["id"], "kept", row["reward"], reason)

    def record(self, attempt: str, status: str, reward: float | None, reason: str) -> None:
        """Append one ledger line (on disk on return)."""
        line = {"id": attempt, "status": status, "reward": reward, "reason": reason}
        _append(self.ledger_file, line)
        self.ledger[attempt] = line

    def save_rewrite(self, rewrite: dict[str, Any]) -> None:
        _append(self.rewrites_file, rewrite)
        self.rewrites[(rewrite["task_id"], rewrite["variant"])] = rewrite

    def counts(self) -> dict[str, int]:
        """Ledger lines by status, over every run into this directory."""
        statuses = [line["status"] for line in self.ledger.values()]
        return {status: statuses.count(status) for status in STATUSES}

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_atomic(self.path / "summary.json", summary)


def check_identity(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The identity recorded in `path` (None for a new directory); RlaifError when it differs from `identity`."""
    if not (path / "collect.json").is_file():
        if path.exists() and any(path.iterdir()):
            raise RlaifError(f"{path} is not empty and holds no collect.json; pass a new or empty --out")
        return None
    found = json.loads((path / "collect.json").read_text())
    for key, value in identity.items():
        if found.get(key) != value:
            raise RlaifError(f"{path} was collected with {key} {found.get(key)!r}, not {value!r}; pass a new --out, "
                             f"or the same {', '.join(identity)} to resume it")
    return found


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSONL file this module wrote, after cutting a torn last line off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        os.truncate(path, len(whole))
    rows = []
    for number, line in enumerate(whole.decode().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise RlaifError(f"{path}:{number}: not valid JSON ({err.msg}); the file was edited or damaged: "
                             "fix or delete that line, then run again") from None
    return rows


def _append(path: Path, row: dict[str, Any]) -> None:
    text = json.dumps(row) + "\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_atomic(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)
