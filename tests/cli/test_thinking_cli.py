"""`corral run --think/--hidethinking`: the flag's values, and how the thinking is shown (plain
when not a terminal, dimmed on one, hidden with --hidethinking)."""

from __future__ import annotations

import io

import pytest

from corral.cli.exit import UsageError
from corral.cli.answers import ThinkingView
from corral.cli.run import parse_think


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("flag, think", [(None, None), ("true", True), ("false", False), ("FALSE", False),
                                         ("low", "low"), ("medium", "medium"), ("high", "high")])
def test_think_values(flag, think):
    assert parse_think(flag) == think


def test_a_bad_think_value_is_a_usage_error():
    with pytest.raises(UsageError):
        parse_think("max-ish")


def show(view: ThinkingView, thinking: list[str], answer: list[str]) -> str:
    for piece in thinking:
        view.on_thinking(piece)
    for piece in answer:
        view.on_text(piece)
    view.close()
    return view.stream.getvalue()


def test_thinking_is_shown_plainly_before_the_answer_off_a_terminal():
    assert show(ThinkingView(stream=io.StringIO()), ["Let me", " see."], ["4", "."]) == \
        "Thinking...\nLet me see.\n...done thinking.\n\n4."


def test_hidethinking_shows_only_the_answer():
    assert show(ThinkingView(hide=True, stream=io.StringIO()), ["Let me see."], ["4"]) == "4"


def test_an_answer_without_thinking_has_no_labels():
    assert show(ThinkingView(stream=io.StringIO()), [], ["4"]) == "4"


def test_thinking_cut_short_is_still_closed():
    assert show(ThinkingView(stream=io.StringIO()), ["hmm"], []) == "Thinking...\nhmm\n...done thinking.\n\n"


def test_on_a_terminal_the_thinking_is_dimmed(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    text = show(ThinkingView(stream=Terminal()), ["hmm"], ["4"])
    assert text == "\x1b[2mThinking...\x1b[0m\n\x1b[2mhmm\x1b[0m\n\x1b[2m...done thinking.\x1b[0m\n\n4"
