"""Thinking split out of model output: the `<think>` family and harmony (tables), any chunking
(hypothesis), and which parser a model gets."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from corral.compiler.spec import THINKING_PARSERS, TemplateSpec
from corral.runtime.thinking import HarmonyParser, Split, ThinkTagParser, make_parser, parser_name, supports_thinking
from tests.specs import runtime_spec


def parse_whole(parser, text: str) -> Split:
    return parser.feed(text) + parser.finish()


def parse_chunks(parser, chunks: list[str]) -> Split:
    out = Split()
    for chunk in chunks:
        out += parser.feed(chunk)
    return out + parser.finish()


THINK = [
    # (start state, output, thinking, content)
    ("before", "<think>a</think>b", "a", "b"),
    ("before", "<think>\nLet me see.\n</think>\n\nThe answer is 4.", "Let me see.\n", "The answer is 4."),
    ("before", "  \n<think>a</think>b", "a", "b"),  # whitespace before the tag
    ("before", "No thinking here.", "", "No thinking here."),
    ("before", "Text <think>not thinking</think>", "", "Text <think>not thinking</think>"),
    ("before", "<think>cut off by a stop", "cut off by a stop", ""),
    ("before", "<think></think>b", "", "b"),
    ("before", "<think>a</think>b</think>c", "a", "b</think>c"),  # only the first closing tag
    ("before", "<thin", "", "<thin"),  # a tag that never completed is text
    ("before", "<thinking>x", "", "<thinking>x"),
    ("before", "", "", ""),
    ("before", "<think>1 < 2 and 2 </ 3</think>yes", "1 < 2 and 2 </ 3", "yes"),
    ("thinking", "Let me see.</think>4", "Let me see.", "4"),  # R1: the prompt opened the tag
    ("thinking", "\nhmm\n</think>\n\nok", "hmm\n", "ok"),
    ("thinking", "never closed", "never closed", ""),
    ("content", "just the answer", "", "just the answer"),  # thinking off: an empty block in the prompt
    ("content", "<think>x</think>", "", "<think>x</think>"),
]


@pytest.mark.parametrize("start, text, thinking, content", THINK)
def test_think_tags(start, text, thinking, content):
    assert parse_whole(ThinkTagParser(start), text) == Split(thinking, content)


HARMONY = [
    # (output after the prompt's `<|start|>assistant`, thinking, content)
    ("<|channel|>analysis<|message|>User asks 2+2.<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>",
     "User asks 2+2.", "4"),
    ("<|channel|>final<|message|>Hello!<|return|>", "", "Hello!"),
    ("<|channel|>analysis<|message|>still thinking", "still thinking", ""),
    # A message to a tool is a call, in the block form the tool parser reads.
    ("<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>commentary to=functions.f "
     "<|constrain|>json<|message|>{}<|call|>", "a", '<tool_call>{"name": "f", "arguments": {}}</tool_call>'),
    ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
     "", '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'),
    ('<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city":"Oslo"}',  # <|call|> ended it
     "", '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'),
    ("<|channel|>commentary to=browser.search<|message|>not json<|call|>",
     "", '<tool_call>{"name": "browser.search", "arguments": "not json"}</tool_call>'),
    ("<|channel|>commentary<|message|>Let me check.<|end|>", "", "Let me check."),  # to the user: text
    ("<|channel|>analysis<|message|>a<|end|><|channel|>final<|message|>b", "a", "b"),  # no <|start|>
    ("plain text, no channels", "", "plain text, no channels"),
    ("<|channel|>analysis<|message|>x < y<|end|><|start|>assistant<|channel|>fin", "x < y", ""),
    ("", "", ""),
]


@pytest.mark.parametrize("text, thinking, content", HARMONY)
def test_harmony(text, thinking, content):
    assert parse_whole(HarmonyParser(), text) == Split(thinking, content)


def test_a_tag_split_across_chunks_is_held_back_only_while_it_may_be_a_tag():
    parser = ThinkTagParser()
    assert parser.feed("<th") == Split()
    assert parser.feed("ink>Let") == Split(thinking="Let")
    assert parser.feed(" me</th") == Split(thinking=" me")
    assert parser.feed("inx") == Split(thinking="</thinx")
    assert parser.feed("</think>") == Split()
    assert parser.feed("\n\nDone") == Split(content="Done")
    assert parser.finish() == Split()


def test_harmony_streams_the_message_and_holds_only_a_possible_token():
    parser = HarmonyParser()
    assert parser.feed("<|channel|>analysis<|mess") == Split()
    assert parser.feed("age|>think") == Split(thinking="think")
    assert parser.feed("ing<|e") == Split(thinking="ing")
    assert parser.feed("nd|><|start|>assistant<|channel|>final<|message|>ok") == Split(content="ok")


def _chunkings(texts: list[str]):
    """A text from `texts` (or random), and a split of it into chunks."""
    return st.one_of(st.sampled_from(texts), st.text(alphabet="<>/|thinkaend \n", max_size=40)).flatmap(
        lambda text: st.lists(st.integers(0, len(text)), max_size=8).map(
            lambda cuts: (text, [text[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(text)])])))


@given(_chunkings([t for _, t, _, _ in THINK]), st.sampled_from(["before", "thinking", "content"]))
def test_any_chunking_of_think_output_parses_as_the_whole(case, start):
    text, chunks = case
    assert parse_chunks(ThinkTagParser(start), chunks) == parse_whole(ThinkTagParser(start), text)


@given(_chunkings([t for t, _, _ in HARMONY]))
def test_any_chunking_of_harmony_output_parses_as_the_whole(case):
    text, chunks = case
    assert parse_chunks(HarmonyParser(), chunks) == parse_whole(HarmonyParser(), text)


def test_every_parser_name_makes_a_parser():
    for name in THINKING_PARSERS:
        assert make_parser(name, "prompt").feed("") == Split()


@pytest.mark.parametrize("name, prompt, output, thinking, content", [
    ("think", "<|im_start|>assistant\n", "<think>a</think>b", "a", "b"),
    ("qwen3", "<|im_start|>assistant\n<think>\n", "a</think>b", "a", "b"),  # the prompt opened it
    ("qwen3", "<|im_start|>assistant\n<think>\n\n</think>\n\n", "b", "", "b"),  # think false: closed
    ("deepseek-r1", "<｜Assistant｜>", "a</think>b", "a", "b"),  # R1 starts thinking whatever the prompt
    ("harmony", "<|start|>assistant", "<|channel|>final<|message|>b", "", "b"),
])
def test_the_prompt_tells_where_the_output_starts(name, prompt, output, thinking, content):
    assert parse_whole(make_parser(name, prompt), output) == Split(thinking, content)


QWEN3_JINJA = "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>{% endif %}"
GO_THINK = "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}"
HARMONY_JINJA = "<|start|>assistant<|channel|>final<|message|>"


@pytest.mark.parametrize("source, architecture, parser, expected", [
    ("{{ .Prompt }}", "llama", None, None),
    (QWEN3_JINJA, "qwen3", None, "think"),
    (GO_THINK, "llama", None, "think"),
    ("{{ messages }}<think>", "deepseek2", None, "think"),
    (HARMONY_JINJA, "gpt-oss", None, "harmony"),
    ("{{ .Prompt }}", "gpt-oss", None, "harmony"),
    ("{{ .Prompt }}", "llama", "deepseek-r1", "deepseek-r1"),  # PARSER wins
])
def test_the_parser_comes_from_parser_then_template_then_architecture(source, architecture, parser, expected):
    spec = runtime_spec()
    spec = spec.model_copy(update={
        "template": TemplateSpec(kind="jinja", source=source, jinja=source, name=None, origin="definition"),
        "model": spec.model.model_copy(update={"architecture": architecture}), "parser": parser})
    assert parser_name(spec) == expected
    assert supports_thinking(spec) is (expected is not None)


def test_a_parser_is_part_of_the_digest():
    spec = runtime_spec()
    assert spec.parser is None
    assert spec.model_copy(update={"parser": "qwen3"}).digest != spec.digest
