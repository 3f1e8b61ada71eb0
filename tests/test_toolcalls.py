"""Hermes-style tool-call parsing: valid calls are read, malformed ones become errors for the model."""

import pytest

from rlaif.errors import RlaifError
from rlaif.rollout.toolcalls import get_parser, parse_hermes

pytestmark = pytest.mark.unit


def test_plain_text_has_no_calls():
    assert parse_hermes("just an answer") == ("just an answer", [], [])


def test_calls_are_read_with_the_text_before_them():
    text = ('Let me look.\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}\n</tool_call>\n'
            '<tool_call>{"name": "submit", "arguments": {}}</tool_call>')
    content, calls, errors = parse_hermes(text)
    assert content == "Let me look."
    assert [(c.name, c.arguments) for c in calls] == [("read_file", {"path": "a.py"}), ("submit", {})]
    assert errors == []


def test_arguments_given_as_a_json_string_are_accepted():
    _, calls, _ = parse_hermes('<tool_call>{"name": "bash", "arguments": "{\\"command\\": \\"ls\\"}"}</tool_call>')
    assert calls[0].arguments == {"command": "ls"}


def test_an_unclosed_last_call_is_still_read():
    _, calls, errors = parse_hermes('<tool_call>{"name": "submit", "arguments": {}}')
    assert [c.name for c in calls] == ["submit"] and errors == []


@pytest.mark.parametrize(("body", "message"), [
    ("{bad json", "tool call 1 is not valid JSON"),
    ('{"arguments": {}}', 'needs a string "name"'),
    ('{"name": "bash", "arguments": [1]}', 'an object "arguments"'),
    ('["bash"]', 'needs a string "name"'),
])
def test_malformed_calls_become_errors_not_exceptions(body, message):
    content, calls, errors = parse_hermes(f"ok <tool_call>{body}</tool_call>")
    assert content == "ok" and calls == [] and len(errors) == 1 and message in errors[0]


def test_unknown_parser_is_a_clear_error():
    with pytest.raises(RlaifError, match="unknown tool-call parser 'json'; available: hermes, none"):
        get_parser("json")
