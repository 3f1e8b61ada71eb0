"""Tool calls out of model text, for policies whose output is raw text (vLLM engines, plain endpoints).

The default, `hermes` (Qwen2.5 and the tiny model's chat template), reads
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks. A malformed block is not an
exception: it becomes an error that the agent loop shows the model, so it can try again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NamedTuple

from rlaif.errors import RlaifError
from rlaif.types import ToolCall

HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)


class ParsedText(NamedTuple):
    content: str
    """The text before the first tool call."""
    calls: list[ToolCall]
    errors: list[str]
    """One line per malformed call, addressed to the model."""


def parse_hermes(text: str) -> ParsedText:
    """Hermes-style `<tool_call>{json}</tool_call>` blocks; an unclosed last block is still read."""
    start = text.find("<tool_call>")
    if start < 0:
        return ParsedText(text, [], [])
    calls, errors = [], []
    for i, body in enumerate(HERMES.findall(text[start:])):
        try:
            data = json.loads(body.strip())
        except json.JSONDecodeError as err:
            errors.append(f"tool call {i + 1} is not valid JSON ({err.msg} at column {err.colno}); "
                          'write <tool_call>{"name": "...", "arguments": {...}}</tool_call>')
            continue
        name, arguments = (data.get("name"), data.get("arguments", {})) if isinstance(data, dict) else (None, None)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(name, str) or not isinstance(arguments, dict):
            errors.append(f'tool call {i + 1} needs a string "name" and an object "arguments"')
            continue
        calls.append(ToolCall(id="", name=name, arguments=arguments))
    return ParsedText(text[:start].rstrip(), calls, errors)


def parse_none(text: str) -> ParsedText:
    """No tool calls: the whole text is the answer."""
    return ParsedText(text, [], [])


PARSERS: dict[str, Callable[[str], ParsedText]] = {"hermes": parse_hermes, "none": parse_none}


def get_parser(name: str) -> Callable[[str], ParsedText]:
    if name not in PARSERS:
        raise RlaifError(f"unknown tool-call parser {name!r}; available: {', '.join(PARSERS)}")
    return PARSERS[name]
