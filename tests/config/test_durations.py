"""keep_alive values: Go durations, seconds, and Ollama's exact error texts."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from corral.config.durations import FOREVER, DurationError, format_go_duration, parse_go_duration, parse_keep_alive


@pytest.mark.parametrize("text, nanos", [
    ("0", 0), ("5m", 300 * 10**9), ("1h30m", 5400 * 10**9), ("10s", 10 * 10**9), ("1.5s", 1_500_000_000),
    (".5s", 500_000_000), ("300ms", 300_000_000), ("2us", 2000), ("2µs", 2000), ("7ns", 7),
    ("-1m", -60 * 10**9), ("+2h", 7200 * 10**9), ("1h1m1s1ms", 3_661_001_000_000),
])
def test_go_durations(text, nanos):
    assert parse_go_duration(text) == nanos


@pytest.mark.parametrize("text, message", [
    ("300", 'time: missing unit in duration "300"'),
    ("", 'time: invalid duration ""'),
    ("abc", 'time: invalid duration "abc"'),
    ("5y", 'time: unknown unit "y" in duration "5y"'),
    ("-", 'time: invalid duration "-"'),
    ("1h-5m", 'time: unknown unit "h-" in duration "1h-5m"'),  # Go's unit runs to the next digit
    (".s", 'time: invalid duration ".s"'),
])
def test_go_duration_errors(text, message):
    with pytest.raises(DurationError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize("value, seconds", [
    (None, None), (0, 0.0), (300, 300.0), (1.5, 1.5), ("5m", 300.0), ("0", 0.0), (-1, FOREVER),
    ("-1m", FOREVER), (-0.5, FOREVER),
])
def test_keep_alive(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value, message", [
    ("300", 'time: missing unit in duration "300"'),
    (True, "Unsupported type: 'bool'"),
    ([1], "Unsupported type: '[]interface {}'"),
    ({"a": 1}, "Unsupported type: 'map[string]interface {}'"),
])
def test_keep_alive_errors(value, message):
    with pytest.raises(DurationError) as info:
        parse_keep_alive(value)
    assert str(info.value) == message


@pytest.mark.parametrize("seconds, text", [
    (300, "5m0s"), (5400, "1h30m0s"), (1.5, "1.5s"), (0, "0s"), (0.25, "250ms"), (3600, "1h0m0s"), (-1, "-1"),
])
def test_format_like_go(seconds, text):
    assert format_go_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**6))
def test_format_then_parse_round_trips(seconds):
    assert parse_go_duration(format_go_duration(seconds)) == seconds * 10**9
