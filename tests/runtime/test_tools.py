"""Tool calls out of model text (tables), streamed extraction, and tools into the prompt."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from corral.runtime.tools import (ToolStream, extract_tool_calls, instruction, messages_without_tools,
                                  template_has_tools)

NAMES = ["get_weather", "add"]
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'

EXTRACT = [
    # (model output, expected text, expected [(name, arguments)])
    (CALL, "", [("get_weather", {"city": "Paris"})]),
    ("  " + CALL + "\n", "", [("get_weather", {"city": "Paris"})]),
    ('{"name": "add", "parameters": {"a": 1, "b": 2}}', "", [("add", {"a": 1, "b": 2})]),
    ('{"name": "add", "arguments": "{\\"a\\": 1}"}', "", [("add", {"a": 1})]),
    ('{"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}', "", [("add", {"a": 1})]),
    ("[" + CALL + ', {"name": "add", "arguments": {}}]', "", [("get_weather", {"city": "Paris"}), ("add", {})]),
    ("<tool_call>\n" + CALL + "\n</tool_call>", "", [("get_weather", {"city": "Paris"})]),
    ("Let me check.\n<tool_call>" + CALL + "</tool_call>", "Let me check.", [("get_weather", {"city": "Paris"})]),
    ("<tool_call>" + CALL + "</tool_call>\n<tool_call>" + '{"name": "add", "arguments": {"a": 1}}' + "</tool_call>",
     "", [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]),
    ("<tool_call>" + CALL, "", [("get_weather", {"city": "Paris"})]),  # closing tag cut off by a stop
    ("```json\n" + CALL + "\n```", "", [("get_weather", {"city": "Paris"})]),
    ("<|python_tag|>" + CALL, "", [("get_weather", {"city": "Paris"})]),
    ("[TOOL_CALLS]" + "[" + CALL + "]", "", [("get_weather", {"city": "Paris"})]),
    ('{"name": "add"}', "", [("add", {})]),
    # not calls: stays text
    ("The weather is fine.", "The weather is fine.", []),
    ('{"name": "unknown_tool", "arguments": {}}', '{"name": "unknown_tool", "arguments": {}}', []),
    ('{"city": "Paris"}', '{"city": "Paris"}', []),
    ('{"name": "add", "arguments": [1, 2]}', '{"name": "add", "arguments": [1, 2]}', []),
    ('{"name": "add", "arguments": "not json"}', '{"name": "add", "arguments": "not json"}', []),
    ("Call " + CALL, "Call " + CALL, []),  # a call inside prose is not a call
    ("<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
    ("[1, 2, 3]", "[1, 2, 3]", []),
    ("", "", []),
]


@pytest.mark.parametrize("text, content, calls", EXTRACT, ids=[repr(t[0][:40]) for t in EXTRACT])
def test_extract(text, content, calls):
    got_text, got_calls = extract_tool_calls(text, NAMES)
    assert got_text == content
    assert [(c.name, c.arguments) for c in got_calls] == calls


def test_any_name_when_no_tools_are_known():
    _, calls = extract_tool_calls('{"name": "whatever", "arguments": {}}', None)
    assert [c.name for c in calls] == ["whatever"]


def test_call_ids_differ():
    _, calls = extract_tool_calls("[" + CALL + "," + CALL + "]", NAMES)
    assert calls[0].id != calls[1].id and all(c.id.startswith("call_") and len(c.id) == 13 for c in calls)


def stream(pieces: list[str]) -> tuple[list[str], str, list]:
    s = ToolStream(NAMES)
    shown = [s.feed(p) for p in pieces]
    rest, calls = s.finish()
    return shown, rest, [(c.name, c.arguments) for c in calls]


def test_stream_passes_text_through_at_once():
    shown, rest, calls = stream(["The", " weather", " is", " fine."])
    assert shown == ["The", " weather", " is", " fine."] and rest == "" and calls == []


def test_stream_holds_a_call_until_the_end():
    shown, rest, calls = stream(['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}'])
    assert shown == ["", ""] and rest == "" and calls == [("get_weather", {"city": "Paris"})]


def test_stream_holds_leading_whitespace_and_partial_openers():
    shown, rest, calls = stream(["\n", "<tool", "_call>", CALL, "</tool_call>"])
    assert "".join(shown) == "" and calls == [("get_weather", {"city": "Paris"})]
    shown, rest, calls = stream(["<to", "day is nice"])
    assert "".join(shown) + rest == "<today is nice" and calls == []


def test_stream_text_then_a_tagged_call():
    shown, rest, calls = stream(["Sure.", " <tool", "_call>", CALL, "</tool_call>"])
    assert "".join(shown) == "Sure. " and calls == [("get_weather", {"city": "Paris"})] and rest == ""


def test_stream_json_that_is_not_a_call_is_text_at_the_end():
    shown, rest, calls = stream(['{"answer": ', "42}"])
    assert shown == ["", ""] and rest == '{"answer": 42}' and calls == []


@given(st.text(alphabet=st.sampled_from(list("ab <>{}_tolc\n\"")), max_size=40), st.data())
def test_stream_never_loses_text(text, data):
    """Whatever the chunking, shown text + the rest + the calls account for every character."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    shown, rest, calls = stream(pieces)
    if not calls:
        assert "".join(shown) + rest == text


def test_template_tool_support():
    assert template_has_tools("{{ if .Tools }}x{{ end }}", "{% if tools %}x{% endif %}")
    assert template_has_tools("", "{% for t in tools %}{% endfor %}")
    assert not template_has_tools("{{ .Prompt }}", "{{ messages }}")


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def test_instruction_lists_each_tool():
    text = instruction([WEATHER])
    assert '{"name": "get_weather", "description": "Weather of a city", "parameters": ' in text
    assert 'answer with only a JSON object of the form {"name": "<tool name>", "arguments": {<arguments>}}' in text


def test_messages_without_tools_keeps_the_system_prompt():
    out = messages_without_tools([{"role": "user", "content": "hi"}], [WEATHER], "Be nice.")
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be nice.\n\nYou can call these tools:")
    out = messages_without_tools([{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}],
                                 [WEATHER], "Be nice.")
    assert out[0]["content"].startswith("Mine.\n\n") and len(out) == 2
    out = messages_without_tools([{"role": "user", "content": "hi"}], [WEATHER], None)
    assert out[0]["content"].startswith("You can call these tools:")
    assert messages_without_tools([{"role": "user", "content": "hi"}], None, "S") == [{"role": "user", "content": "hi"}]
