"""Reading a run's files into what the report shows: metric series, the summary, and one flat row per trajectory.

Three kinds of directory are understood:

    train    metrics.jsonl, trajectories.jsonl (rows carry `group_index` and `dropped`), probe.jsonl if present
    eval     trajectories.jsonl and summary.json (`rlaif eval`)
    collect  train.jsonl (kept rows, OpenAI-form messages), attempts.jsonl (the ledger) and summary.json

Files of a live run are read as they are: a last line still being written (not valid JSON yet) is left out, any
other bad line is an RlaifError naming it. Token ids and logprobs (`turns`) are not kept: only their counts.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlaif.errors import RlaifError

INPUTS = ("metrics.jsonl", "trajectories.jsonl", "probe.jsonl", "summary.json", "train.jsonl", "attempts.jsonl")
"""The files a report is made from; a change to any of them makes a served report regenerate."""

SERIES_ORDER = ("reward/mean", "reward/std", "reward/", "pass_rate", "probe/", "staleness/", "time/", "tokens_per_s",
                "dropped_total/", "judge/", "lr", "kl", "clip_frac", "entropy")
"""Curves whose key starts with one of these come first, in this order; every other numeric key follows, by name."""


@dataclass
class Run:
    """What one directory holds, ready to render. `trajectories` are flat rows (see `_flat`), in file order."""

    path: Path
    kind: Literal["train", "eval", "collect"]
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Metric key -> (step, value) points; held-out probe figures are keyed `probe/<name>`."""
    summary: dict[str, Any] | None = None
    trajectories: list[dict[str, Any]] = field(default_factory=list)


def load_run(path: Path) -> Run:
    """The run in `path`; RlaifError when it holds none of the files of `rlaif train`, `eval` or `collect`."""
    if (path / "metrics.jsonl").exists():
        metrics = read_rows(path / "metrics.jsonl")
        probe = read_rows(path / "probe.jsonl")
        run = Run(path, "train", series=metric_series(metrics, probe))
        trained = _trained_at(metrics)
        run.trajectories = [_flat(i, row, trained) for i, row in enumerate(read_rows(path / "trajectories.jsonl"))]
    elif (path / "trajectories.jsonl").exists():
        run = Run(path, "eval")
        run.trajectories = [_flat(i, row, {}) for i, row in enumerate(read_rows(path / "trajectories.jsonl"))]
    elif (path / "train.jsonl").exists() or (path / "attempts.jsonl").exists():
        run = Run(path, "collect", trajectories=_collected(path))
    else:
        raise RlaifError(f"{path}: no metrics.jsonl or trajectories.jsonl; pass a directory written by `rlaif train`, "
                         "`rlaif eval` or `rlaif collect`")
    if (path / "summary.json").exists():
        run.summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    return run


def signature(path: Path) -> str:
    """Changes whenever one of the `INPUTS` of `path` is written, created or removed (sizes and mtimes)."""
    parts = []
    for name in INPUTS:
        try:
            stat = (path / name).stat()
        except FileNotFoundError:
            continue
        parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file ([] when absent), non-finite numbers as None. A last line that does not parse
    is taken to be still being written and left out; a bad line before it is an RlaifError."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=lambda _: None)  # NaN, Infinity: JSON.parse rejects them
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise RlaifError(f"{path}:{number}: not valid JSON ({err.msg}); was the file edited by hand?") from None
        if not isinstance(row, dict):
            raise RlaifError(f"{path}:{number}: a line must be a JSON object, not {type(row).__name__}")
        rows.append(row)
    return rows


def metric_series(metrics: list[dict[str, Any]], probe: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Every numeric key of the metric rows (and of the probe rows, as `probe/<key>`) as points by step, ordered by
    `SERIES_ORDER`. Non-numeric values (lists such as `trained_groups`) and nulls (non-finite values) are left out."""
    series: dict[str, list[tuple[int, float]]] = {}
    for rows, prefix in ((metrics, ""), (probe, "probe/")):
        for row in rows:
            step = row.get("step")
            if not isinstance(step, int):
                continue
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, int | float) and not isinstance(value, bool):
                    series.setdefault(prefix + key, []).append((step, value))

    def rank(key: str) -> tuple[int, str]:
        return next((i for i, p in enumerate(SERIES_ORDER) if key.startswith(p)), len(SERIES_ORDER)), key

    return {key: series[key] for key in sorted(series, key=rank)}


def _trained_at(metrics: list[dict[str, Any]]) -> dict[int, tuple[int, int | None]]:
    """group_index -> (the step that trained it, the learner version when it was drawn): a step logs `version`
    after its update, so the draw saw `version - 1`."""
    trained: dict[int, tuple[int, int | None]] = {}
    for row in metrics:
        version = row.get("version")
        for index in row.get("trained_groups") or ():
            trained[index] = (row["step"], version - 1 if isinstance(version, int) else None)
    return trained


def _flat(i: int, row: dict[str, Any], trained: dict[int, tuple[int, int | None]]) -> dict[str, Any]:
    """One trajectories.jsonl row as the page shows it. `kind` is how it ended: the episode's status when not ok,
    else its reward's (`ungraded` when it has none). A train row of a group lost whole has only `group_index`,
    `dropped` and `error`."""
    reward = row.get("reward")
    status = row.get("status", "infra_error")
    kind = status if status != "ok" else (reward or {}).get("status", "ungraded")
    index = row.get("group_index")
    step, drawn_version = trained.get(index, (None, None)) if index is not None else (None, None)
    version = row.get("weight_version")
    turns = row.get("turns") or []
    return {
        "i": i, "id": row.get("id", f"group {index}"), "task_id": row.get("task_id", ""),
        "group": str(index) if index is not None else row.get("task_id", ""), "group_index": index,
        "weight_version": version, "status": status, "kind": kind, "dropped": row.get("dropped") or "",
        "error": row.get("error"), "reward": reward, "messages": row.get("messages") or [],
        "tools": row.get("tools") or [], "timings": row.get("timings") or {}, "turns": len(turns),
        "completion_tokens": sum(len(t.get("completion_ids", ())) for t in turns), "trained_step": step,
        "staleness": drawn_version - version if drawn_version is not None and version is not None else None,
    }


def _collected(path: Path) -> list[dict[str, Any]]:
    """A collection's kept rows (train.jsonl), then its other attempts (rejected, failed, duplicate) from the
    ledger, which hold no conversation."""
    kept = read_rows(path / "train.jsonl")
    rows = []
    for i, row in enumerate(kept):
        messages = [{**m, "tool_calls": [_openai_call(c) for c in m.get("tool_calls") or ()]}
                    for m in row.get("messages") or ()]
        reward = {"status": "ok", "total": row.get("reward"), "components": row.get("components") or {},
                  "details": {"provenance": row.get("provenance")}}
        task = row.get("task_id", "")
        rows.append({"i": i, "id": row.get("id", ""), "task_id": task, "group": task, "status": "kept",
                     "kind": "kept", "dropped": "", "reward": reward, "messages": messages})
    seen = {row["id"] for row in rows}
    for line in read_rows(path / "attempts.jsonl"):
        if line.get("id") in seen or line.get("status") == "kept":
            continue
        task = str(line.get("id", "")).split("|")[0]
        total = line.get("reward")
        rows.append({"i": len(rows), "id": line.get("id", ""), "task_id": task, "group": task,
                     "status": line.get("status", ""), "kind": line.get("status", ""), "dropped": "",
                     "error": line.get("reason"), "messages": [],
                     "reward": None if total is None else {"status": "ok", "total": total, "components": {},
                                                           "details": {}}})
    return rows


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-form tool call ({"function": {"name", "arguments": JSON text}}) as a `ToolCall`'s fields."""
    function = call.get("function") or {}
    arguments = function.get("arguments", "")
    with contextlib.suppress(json.JSONDecodeError):  # else shown as the text the model wrote
        arguments = json.loads(arguments) if isinstance(arguments, str) and arguments else arguments
    return {"id": call.get("id", ""), "name": function.get("name", ""), "arguments": arguments}
