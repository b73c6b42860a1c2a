"""Stop strings over streamed text, and UTF-8 decoding of token pieces: tables, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.engine.stops import StopMatcher, Utf8Decoder, first_stop

# (stops, [(pushed chunk, text emitted by that push)], stopped, text flushed at the end)
STREAMS = [
    ((), [("hello", "hello"), (" world", " world")], False, ""),
    (("\n",), [("ab\ncd", "ab")], True, ""),
    (("User:",), [("Hi Us", "Hi "), ("er: x", "")], True, ""),
    (("User:",), [("Hi Us", "Hi "), ("ed it", "Used it")], False, ""),
    (("User:",), [("Hi U", "Hi "), ("s", "")], False, "Us"),
    (("abcd", "c"), [("abcd", "ab")], True, ""),  # the stop that ends first wins
    (("abcd", "c"), [("ab", ""), ("cd", "ab")], True, ""),
    (("ab", "b"), [("xab", "x")], True, ""),  # same end: the earlier start wins
    (("",), [("abc", "abc")], False, ""),  # an empty stop is ignored
    (("<",), [("<tag>", "")], True, ""),
    (("aab",), [("a", ""), ("a", ""), ("a", "a"), ("b", "")], True, ""),
    (("é!",), [("caf", "caf"), ("é", ""), ("!", "")], True, ""),
    (("END",), [("fooEND", "foo"), ("more", "")], True, ""),  # nothing after a stop
    (("x", "x"), [("axb", "a")], True, ""),  # duplicates are harmless
]


@pytest.mark.parametrize("stops, pushes, stopped, flushed", STREAMS)
def test_stream_table(stops: tuple[str, ...], pushes: list[tuple[str, str]], stopped: bool, flushed: str) -> None:
    matcher = StopMatcher(stops)
    for chunk, emitted in pushes:
        assert matcher.push(chunk) == emitted, f"after pushing {chunk!r}"
    assert matcher.stopped is stopped
    assert matcher.flush() == flushed


@pytest.mark.parametrize("text, stops, expected", [
    ("hello", ("z",), None),
    ("hello", ("l",), (2, 3)),
    ("hello", ("llo", "el"), (1, 3)),
    ("hello", ("hell", "ell"), (0, 4)),
    ("", ("a",), None),
])
def test_first_stop_table(text: str, stops: tuple[str, ...], expected: tuple[int, int] | None) -> None:
    assert first_stop(text, stops) == expected


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


ALPHABET = "ab\n:é"


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=ALPHABET, max_size=40),
       stops=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), max_size=3),
       cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=12))
def test_any_chunking_gives_the_text_up_to_the_first_stop(text: str, stops: list[str], cuts: list[int]) -> None:
    matcher = StopMatcher(stops)
    emitted = ""
    for chunk in _chunks(text, cuts):
        emitted += matcher.push(chunk)
        # Whatever is held back could still become a stop.
        assert not matcher.held or any(s.startswith(matcher.held) and s != matcher.held for s in stops)
    found = first_stop(text, stops)
    if found is None:
        assert not matcher.stopped
        assert emitted + matcher.flush() == text
    else:
        assert matcher.stopped
        assert emitted == text[: found[0]]
        assert matcher.flush() == ""


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_utf8_decoder_reassembles_any_split(text: str, cuts: list[int]) -> None:
    data = text.encode("utf-8")
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    decoder = Utf8Decoder()
    decoded = "".join(decoder.decode(data[a:b]) for a, b in zip(bounds, bounds[1:]))
    assert decoded + decoder.flush() == text


@pytest.mark.parametrize("pieces, decoded, flushed", [
    ([b"caf", b"\xc3", b"\xa9"], ["caf", "", "é"], ""),
    ([b"\xf0\x9f", b"\x8e\x89!"], ["", "🎉!"], ""),
    ([b"ok\xff"], ["ok\ufffd"], ""),  # a byte that can never start a character
    ([b"cut \xe4\xb8"], ["cut "], "\ufffd"),  # a character the stream never finished
])
def test_utf8_decoder_table(pieces: list[bytes], decoded: list[str], flushed: str) -> None:
    decoder = Utf8Decoder()
    assert [decoder.decode(p) for p in pieces] == decoded
    assert decoder.flush() == flushed


@pytest.mark.parametrize("stops, pushes, matched", [
    (("END",), ["a", "E", "ND"], "END"),
    (("xyz", "b"), ["ab", "c"], "b"),
    (("\nUser:", "User"), ["\nUs", "er:"], "User"),  # the one that ends first
    (("END",), ["a", "b"], None),
    ((), ["a"], None),
])
def test_matched_names_the_stop_that_cut_the_stream(stops: tuple[str, ...], pushes: list[str],
                                                   matched: str | None) -> None:
    matcher = StopMatcher(stops)
    for text in pushes:
        matcher.push(text)
    assert matcher.matched == matched and matcher.stopped == (matched is not None)
