"""Parsing judge verdicts strictly. Anything that is not the documented JSON is a `VerdictError`.

A verdict arrives as the reply's text (a JSON object, bare or in a ```json fence, possibly after a
short preamble) or as a tool call's input. A malformed verdict is a judge failure, retried and then
reported as infra_error: it never becomes a score.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rlaif_rewards.rubric import Rubric

FENCED = re.compile(r"```(?:json)?\s*\n(.*?)\n\s*```", re.S)


class VerdictError(ValueError):
    """The judge's reply is not a valid verdict."""


def extract_object(text: str) -> dict[str, Any]:
    """The JSON object in a reply: a fenced block, the whole text, or the first balanced {...} in it."""
    candidates = [*FENCED.findall(text), text.strip()]
    start = text.find("{")
    if start >= 0:
        candidates.append(_balanced(text, start))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, TypeError):
            continue
        if isinstance(value, dict):
            return value
    raise VerdictError(f"no JSON object in the judge's reply: {text[:200]!r}")


def _balanced(text: str, start: int) -> str:
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return text[start:]


def _unit(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise VerdictError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


def parse_pointwise(verdict: dict[str, Any], rubric: Rubric | None = None) -> dict[str, Any]:
    """{"score", "reason", "criteria"?} -> a clean verdict. With a rubric, every criterion must be scored, and
    the score is the weighted mean of the criteria (computed here, not trusted to the judge's arithmetic)."""
    reason = verdict.get("reason", "")
    if not isinstance(reason, str):
        raise VerdictError("reason must be a string")
    clean: dict[str, Any] = {"score": _unit(verdict.get("score"), "score"), "reason": reason}
    if rubric is not None:
        given = verdict.get("criteria")
        if not isinstance(given, list) or not all(isinstance(c, dict) for c in given):
            raise VerdictError("criteria must be a list of {name, reason, score} objects")
        by_name = {c.get("name"): c for c in given}
        missing = [c.name for c in rubric.criteria if c.name not in by_name]
        if missing:
            raise VerdictError(f"criteria not scored: {', '.join(missing)}")
        scores = {c.name: _unit(by_name[c.name].get("score"), f"criterion {c.name}") for c in rubric.criteria}
        total = sum(c.weight for c in rubric.criteria) or 1.0
        clean["criteria"] = {c.name: {"score": scores[c.name], "reason": str(by_name[c.name].get("reason", ""))}
                             for c in rubric.criteria}
        clean["score"] = sum(c.weight * scores[c.name] for c in rubric.criteria) / total
    return clean


def parse_group(verdict: dict[str, Any], ids: list[str]) -> dict[str, dict[str, Any]]:
    """{"scores": [{"id", "score", "reason"}]} -> {id: {"score", "reason"}}; every id exactly once."""
    entries = verdict.get("scores")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise VerdictError("scores must be a list of {id, score, reason} objects")
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        answer_id = str(entry.get("id"))
        if answer_id not in ids or answer_id in out:
            raise VerdictError(f"unexpected or repeated id {answer_id!r}; expected each of {ids} once")
        out[answer_id] = {"score": _unit(entry.get("score"), f"score of {answer_id}"),
                          "reason": str(entry.get("reason", ""))}
    if set(out) != set(ids):
        raise VerdictError(f"scores missing for {sorted(set(ids) - set(out))}")
    return out
