"""JSON schemas of the verdict formats (`rlaif_rewards.prompts`), for judges with `structured: true`.

A server that enforces a schema (vLLM's structured outputs, through OpenAI's `response_format`) then can only
write a verdict that parses: every criterion of the rubric (or every answer id of a group) exactly once, in
order, with a score in [0, 1] and a bounded reason. This is what makes a small local model usable as a judge;
it does not make its verdicts right, which `rlaif judge calibrate` measures.
"""

from __future__ import annotations

from typing import Any

from rlaif_rewards.rubric import Rubric

REASON_CHARS = 100
"""A reason's length limit: verdicts stay within a judge's `max_tokens`."""


def _entry(key: str, value: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": [key, "reason", "score"],
            "properties": {key: {"const": value}, "reason": _reason(), "score": _score()}}


def _reason() -> dict[str, Any]:
    return {"type": "string", "maxLength": REASON_CHARS}


def _score() -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 1}


def _exactly(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "array", "prefixItems": items, "items": False, "minItems": len(items), "maxItems": len(items)}


def pointwise(rubric: Rubric | None) -> dict[str, Any]:
    """`{"criteria"?, "score", "reason"}`, the criteria being the rubric's, each once, in the prompt's order."""
    properties: dict[str, Any] = {"score": _score(), "reason": _reason()}
    if rubric is not None:
        properties = {"criteria": _exactly([_entry("name", c.name) for c in rubric.criteria]), **properties}
    return {"type": "object", "additionalProperties": False, "required": list(properties), "properties": properties}


def group(ids: list[str]) -> dict[str, Any]:
    """`{"scores": [{"id", "score", "reason"}, ...]}` with each answer id once, in the prompt's order."""
    return {"type": "object", "additionalProperties": False, "required": ["scores"],
            "properties": {"scores": _exactly([_entry("id", i) for i in ids])}}
