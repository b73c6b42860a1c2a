"""Go text/template -> Jinja: every construct renders what Go renders, the rest fails at its position."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.compiler.gotemplate import values
from corral.compiler.templates.chat import compile_template
from corral.compiler.errors import TemplateError
from corral.compiler.gotemplate import translate
from corral.compiler.gotemplate.fmt import float_v, sprintf
from corral.compiler.gotemplate.values import json_float
from corral.compiler.templates.sandbox import compile_jinja, go_environment, render_jinja
from corral.dsl.span import Span


def render(text: str, **data: Any) -> str:
    """Render Go template text with `data` as its root (`.` and `$`)."""
    go = translate(text)
    data.setdefault("Response", "")  # templates without .Response get one appended, as in Ollama
    template = compile_jinja(go_environment(), go.jinja, go.span_at)
    return render_jinja(template, {"root": data}, go.span_at)


MESSAGES = [values.message(m) for m in (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "<Paris>", "days": 2}}}]},
    {"role": "tool", "content": "20C", "tool_name": "get_weather"},
)]
TOOLS = values.tools([{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "unit": {"type": "string", "enum": ["c", "f"]},
        "city": {"type": "string", "description": "City name"}}}}}])
TOOL_JSON = ('{"type":"function","function":{"name":"get_weather","description":"Get the weather",'
             '"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string",'
             '"description":"City name"},"unit":{"type":"string","enum":["c","f"]}}}}}')

# (id, Go template, root data, expected output)
CONSTRUCTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("text", "plain text\n", {}, "plain text\n"),
    ("text-jinja-lookalikes", "a {% b %} {# c #} {{ `{{` }}", {}, "a {% b %} {# c #} {{"),
    ("text-crlf", "a\r\nb\r\n", {}, "a\r\nb\r\n"),
    ("text-brace-before-action", "x{ {{- /* c */ -}} {y", {}, "x{{y"),
    ("trim-both", "a  \n{{- 1 -}}\n  b", {}, "a1b"),
    ("trim-left-only", "a \n{{- 1 }} \nb", {}, "a1 \nb"),
    ("minus-number-is-no-trim", "a {{-3}}", {}, "a -3"),
    ("comment", "a{{/* note */}}b", {}, "ab"),
    ("comment-trimmed", "a \n{{- /* note */ -}}\n b", {}, "ab"),
    ("field", "{{ .System }}", {"System": "S"}, "S"),
    ("missing-key", "[{{ .Prompt }}]", {}, "[<no value>]"),
    ("if-empty-string", "{{ if .X }}y{{ else }}n{{ end }}", {"X": ""}, "n"),
    ("if-empty-list", "{{ if .X }}y{{ else }}n{{ end }}", {"X": []}, "n"),
    ("if-zero", "{{ if .X }}y{{ else }}n{{ end }}", {"X": 0}, "n"),
    ("if-nil", "{{ if .X }}y{{ else }}n{{ end }}", {"X": None}, "n"),
    ("if-false", "{{ if .X }}y{{ else }}n{{ end }}", {"X": False}, "n"),
    ("if-text", "{{ if .X }}y{{ else }}n{{ end }}", {"X": "a"}, "y"),
    ("if-struct", "{{ if index .M 0 }}y{{ end }}", {"M": MESSAGES}, "y"),
    ("else-if", '{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}C{{ end }}', {"R": "b"}, "B"),
    ("else-if-fallthrough", '{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}C{{ end }}', {"R": "z"}, "C"),
    ("if-declares", "{{ if $x := .A }}{{ $x }}{{ else }}none{{ end }}", {"A": "v"}, "v"),
    ("with", "{{ with .X }}[{{ . }}]{{ else }}none{{ end }}", {"X": "v"}, "[v]"),
    ("with-empty", "{{ with .X }}[{{ . }}]{{ else }}none{{ end }}", {"X": ""}, "none"),
    ("else-with", "{{ with .A }}a{{ else with .B }}b={{ . }}{{ end }}", {"A": "", "B": "x"}, "b=x"),
    ("range", "{{ range .Messages }}{{ .Role }};{{ end }}", {"Messages": MESSAGES},
     "system;user;assistant;tool;"),
    ("range-index", "{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Role }} {{ end }}",
     {"Messages": MESSAGES[:2]}, "0=system 1=user "),
    ("range-one-var", "{{ range $m := .L }}{{ $m }}{{ . }}{{ end }}", {"L": ["a", "b"]}, "aabb"),
    ("range-else", "{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("range-nil", "{{ range .Missing }}x{{ else }}empty{{ end }}", {}, "empty"),
    ("range-map-sorted", "{{ range $k, $v := .M }}{{ $k }}={{ $v }},{{ end }}", {"M": {"b": 2, "a": 1}}, "a=1,b=2,"),
    ("range-int", "{{ range 3 }}{{ . }}{{ end }}", {}, "012"),
    ("break-continue", "{{ range $i, $_ := .L }}{{ if eq $i 1 }}{{ continue }}{{ end }}"
     "{{ if eq $i 3 }}{{ break }}{{ end }}{{ . }}{{ end }}", {"L": list("abcde")}, "ac"),
    ("root-in-range", "{{ range .L }}{{ $.System }}{{ . }}{{ end }}", {"L": ["1", "2"], "System": "S"}, "S1S2"),
    ("dot-restored-after-range", "{{ with .W }}{{ range .L }}{{ . }}{{ end }}{{ .N }}{{ end }}",
     {"W": {"L": ["a"], "N": "n"}}, "an"),
    ("assign-escapes-range", '{{ $x := "a" }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}', {"L": ["b", "c"]}, "c"),
    ("shadowing", "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}", {}, "21"),
    ("last-idiom", "{{ range $i, $_ := .L }}{{ $last := eq (len (slice $.L $i)) 1 }}"
     "{{ if $last }}last={{ . }}{{ end }}{{ end }}", {"L": ["a", "b"]}, "last=b"),
    ("or-returns-operand", '{{ or .A "default" }}', {"A": ""}, "default"),
    ("and-returns-operand", '[{{ and "x" .B }}]{{ and 1 0 }}', {"B": ""}, "[]0"),
    ("and-short-circuits", "{{ if and .L (index .L 0) }}y{{ else }}n{{ end }}", {"L": []}, "n"),
    ("not", "{{ not .A }} {{ not 1 }}", {"A": ""}, "true false"),
    ("eq-any-of", '{{ eq .R "x" "y" }} {{ eq .R "z" }}', {"R": "y"}, "true false"),
    ("eq-nil", "{{ eq .Missing nil }} {{ eq .A nil }}", {"A": "a"}, "true false"),
    ("ne-lt-le-gt-ge", '{{ ne 1 2 }}{{ lt 1 2 }}{{ le 2 2 }}{{ gt "b" "a" }}{{ ge 1.5 2.5 }}', {},
     "truetruetruetruefalse"),
    ("len-counts-bytes", '{{ len "héllo" }} {{ len .L }} {{ len .M }}', {"L": [1, 2, 3], "M": {"a": 1}}, "6 3 1"),
    ("slice-string", '{{ slice "hello" 1 3 }}|{{ slice "hello" 2 }}', {}, "el|llo"),
    ("slice-list", "{{ len (slice .L 1) }}", {"L": ["a", "b", "c"]}, "2"),
    ("index", '{{ index .L 1 }} {{ index .M "a" }} {{ index .M "zz" }} {{ index "abc" 0 }}',
     {"L": ["a", "b"], "M": {"a": "x"}}, "b x <no value> 97"),
    ("printf", '{{ printf "%s-%d-%v-%q-%t" "a" 3 true "q" false }}', {}, 'a-3-true-"q"-false'),
    ("printf-join", '{{ printf "%s\\n\\n%s" .A .B }}', {"A": "a", "B": "b"}, "a\n\nb"),
    ("printf-star-width", '{{ len (printf "a%*s" 3 "") }}', {}, "4"),
    ("printf-padding", '[{{ printf "%5s|%-4d|%05.1f|%x" "ab" 7 3.14159 255 }}]', {}, "[   ab|7   |003.1|ff]"),
    ("printf-bad-args", '{{ printf "%d" }}|{{ printf "%d" "x" }}|{{ printf "a" 1 }}', {},
     "%!d(MISSING)|%!d(string=x)|a%!(EXTRA int=1)"),
    ("print", '{{ print "a" 1 2 "b" }}|{{ println 1 "x" }}', {}, "a1 2b|1 x\n"),
    ("json", "{{ json .M }}", {"M": {"b": "<x>", "a": 1.0, "c": [True, None]}},
     '{"a":1,"b":"\\u003cx\\u003e","c":[true,null]}'),
    ("html-urlquery", '{{ html "<a&\'b>" }} {{ urlquery "a b&c" }}', {}, "&lt;a&amp;&#39;b&gt; a+b%26c"),
    ("pipeline", '{{ "hi" | printf "%s!" }} {{ .L | len }} {{ .L | len | printf "%03d" }}', {"L": [1, 2]},
     "hi! 2 002"),
    ("parenthesised-chain", "{{ (index .Messages 1).Role }}", {"Messages": MESSAGES}, "user"),
    ("numbers", "{{ 1.5 }} {{ 1e6 }} {{ 0x1F }} {{ -3 }} {{ 017 }} {{ 1_000 }} {{ 'a' }}", {},
     "1.5 1e+06 31 -3 15 1000 97"),
    ("float-printing", "{{ .A }} {{ .B }} {{ .C }} {{ .D }}", {"A": 3.0, "B": 1234567.0, "C": 0.00001, "D": 0.25},
     "3 1.234567e+06 1e-05 0.25"),
    ("strings", '{{ "a\\tb\\u00e9" }}|{{ `raw\\n` }}', {}, "a\tbé|raw\\n"),
    ("bools-and-nil-arg", "{{ true }} {{ print nil }}", {}, "true <nil>"),
    ("tool-calls", "{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Name }} {{ .Function.Arguments }}"
     "{{ end }}{{ end }}", {"Messages": MESSAGES}, 'get_weather {"city":"\\u003cParis\\u003e","days":2,"unit":"c"}'),
    ("tool-call-argument", "{{ range (index .Messages 2).ToolCalls }}{{ .Function.Arguments.city }} "
     "{{ .Function.Arguments.days }}{{ end }}", {"Messages": MESSAGES}, "<Paris> 2"),
    ("tool-message", "{{ range .Messages }}{{ if .ToolName }}{{ .ToolName }}={{ .Content }}{{ end }}{{ end }}",
     {"Messages": MESSAGES}, "get_weather=20C"),
    ("tools-json", "{{ .Tools }}", {"Tools": TOOLS}, "[" + TOOL_JSON + "]"),
    ("tool-json", "{{ range .Tools }}{{ . }}{{ end }}", {"Tools": TOOLS}, TOOL_JSON),
    ("tool-properties", "{{ range .Tools }}{{ range $name, $p := .Function.Parameters.Properties }}"
     "{{ $name }}:{{ $p.Type }}:{{ $p.Description }};{{ end }}{{ end }}", {"Tools": TOOLS},
     "city:string:City name;unit:string:;"),
    ("no-tools-is-false", "{{ if .Tools }}tools{{ else }}none{{ end }}", {"Tools": values.tools(None)}, "none"),
    ("define-template", '{{ define "x" }}[{{ . }}|{{ $ }}]{{ end }}{{ template "x" "a" }}{{ template "x" }}', {},
     "[a|a][<no value>|<no value>]"),
    ("block", '{{ block "y" .N }}<{{ . }}>{{ end }}', {"N": 5}, "<5>"),
]


@pytest.mark.parametrize("text, data, expected", [c[1:] for c in CONSTRUCTS], ids=[c[0] for c in CONSTRUCTS])
def test_construct_renders_like_go(text: str, data: dict[str, Any], expected: str) -> None:
    assert render(text, **data) == expected


def test_current_date_is_iso() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d{4}-\d\d-\d\d", render("{{ currentDate }} {{ yesterdayDate }}"))


# (Go template, message, (line, column, end line, end column)) with no origin: template-relative.
ERRORS: list[tuple[str, str, tuple[int, int, int, int]]] = [
    ("{{ .X", "unclosed action", (1, 1, 1, 3)),
    ("ab{{ end }}", "unexpected {{end}}", (1, 6, 1, 9)),
    ("{{ else }}", "unexpected {{else}}", (1, 4, 1, 8)),
    ("a{{ if .X }}a", "missing {{end}} for {{if}}", (1, 5, 1, 7)),
    ("{{ if .A }}{{ else }}{{ else }}{{ end }}", "expected {{end}}; found {{else}}", (1, 25, 1, 29)),
    ("{{ range .L }}{{ else if .X }}{{ end }}{{ end }}", "unexpected 'if' in else", (1, 23, 1, 25)),
    ("{{ $y }}", "undefined variable '$y'", (1, 4, 1, 6)),
    ("{{ if $x := 1 }}{{ end }}{{ $x }}", "undefined variable '$x'", (1, 29, 1, 31)),
    ("{{ foo .X }}", "function 'foo' not defined", (1, 4, 1, 7)),
    ("{{ js .X }}", "function 'js' is not supported", (1, 4, 1, 6)),
    ("{{ call .F }}", "function 'call' is not supported", (1, 4, 1, 8)),
    ("{{ toTypeScriptType .X }}", "function 'toTypeScriptType' is not supported", (1, 4, 1, 20)),
    ("{{ break }}", "{{break}} outside {{range}}", (1, 4, 1, 9)),
    ("{{ with .X }}{{ continue }}{{ end }}", "{{continue}} outside {{range}}", (1, 17, 1, 25)),
    ("{{ /* c */ }}", "unrecognized character in action: '/'", (1, 4, 1, 5)),
    ("{{/* c */ x}}", "comment ends before closing delimiter", (1, 8, 1, 10)),
    ("{{/* open", "unclosed comment", (1, 3, 1, 5)),
    ("{{ not 1 2 }}", "wrong number of args for not: want 1 got 2", (1, 4, 1, 7)),
    ("{{ printf }}", "wrong number of args for printf: want at least 1 got 0", (1, 4, 1, 10)),
    ("{{ eq 1 }}", "wrong number of args for eq: want at least 2 got 1", (1, 4, 1, 6)),
    ('{{ .X "a" }}', "can't give argument to non-function", (1, 4, 1, 6)),
    ("{{ nil }}", "nil is not a command", (1, 4, 1, 7)),
    ('{{ "a" | "b" }}', "non executable command in pipeline stage 2", (1, 10, 1, 13)),
    ("{{ }}", "missing value for command", (1, 4, 1, 6)),
    ("{{ if }}{{ end }}", "missing value for if", (1, 7, 1, 9)),
    ("{{ (len .X }}", "unclosed left paren", (1, 12, 1, 14)),
    ("{{ len .X) }}", "unexpected right paren", (1, 10, 1, 11)),
    ('{{ .A.B"x" }}', "bad character '\"'", (1, 8, 1, 9)),
    ('{{ "a".B }}', "unexpected . after term", (1, 4, 1, 9)),
    ("{{ $a, $b := .L }}", "too many declarations in command", (1, 6, 1, 7)),
    ("{{ ($x := 1) }}", "variables cannot be declared inside parentheses", (1, 4, 1, 13)),
    ("{{ 1i }}", "complex numbers are not supported", (1, 4, 1, 6)),
    ("{{ 09 }}", "bad number syntax: '09'", (1, 4, 1, 6)),
    ('{{ "abc }}', "unterminated quoted string", (1, 4, 1, 11)),
    ('{{ "\\q" }}', "invalid escape sequence in quoted string", (1, 5, 1, 7)),
    ('{{ template "nope" }}', "no such template 'nope'", (1, 1, 1, 22)),
    ('{{ define "a" }}{{ define "b" }}{{ end }}{{ end }}', "{{define}} is only allowed at the top level",
     (1, 20, 1, 26)),
    ('{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}', "template 'x' invokes itself",
     (1, 17, 1, 35)),
    ("line one\n  {{ $zz }}", "undefined variable '$zz'", (2, 6, 2, 9)),
]


@pytest.mark.parametrize("text, message, position", [e for e in ERRORS], ids=[e[1] for e in ERRORS])
def test_untranslatable_is_an_error_at_its_position(text: str, message: str,
                                                     position: tuple[int, int, int, int]) -> None:
    with pytest.raises(TemplateError) as caught:
        translate(text)
    span = caught.value.span
    assert caught.value.message == message
    assert span is not None
    assert (span.line, span.column, span.end_line, span.end_column) == position


# The same errors inside a Modelfile whose TEMPLATE value starts at line 3, column 10.
ORIGIN = Span("Modelfile", 3, 10)
ORIGIN_ERRORS: list[tuple[str, str]] = [
    ("ab{{ end }}", "Modelfile:3:15: error: unexpected {{end}}"),
    ("line one\n  {{ $zz }}", "Modelfile:4:6: error: undefined variable '$zz'"),
    ("a\nb\n{{ if .X }}", "Modelfile:5:4: error: missing {{end}} for {{if}}"),
]


@pytest.mark.parametrize("text, first_line", ORIGIN_ERRORS)
def test_positions_map_onto_the_modelfile(text: str, first_line: str) -> None:
    with pytest.raises(TemplateError) as caught:
        translate(text, origin=ORIGIN)
    assert caught.value.render().splitlines()[0] == first_line


# Failures Go only finds while executing are found by compile_template's test render.
RUNTIME_ERRORS: list[tuple[str, str, str]] = [
    ("{{ index .Messages 9 }}", "template failed: error calling index: index out of range: 9", "Modelfile:3:10"),
    ("x\n{{ range .Messages }}\n{{ .Role }} {{ .Nope }}{{ end }}",
     "template failed: can't evaluate field Nope in type api.Message", "Modelfile:5:1"),
    ("{{ range .Messages }}{{ if eq .Role 1 }}x{{ end }}{{ end }}",
     "template failed: error calling eq: incompatible types for comparison", "Modelfile:3:10"),
    ("{{ $x := 1 }}\n{{ $x.Y }}", "template failed: can't evaluate field Y in type int", "Modelfile:4:1"),
]


@pytest.mark.parametrize("text, message, where", RUNTIME_ERRORS)
def test_execution_errors_fail_at_compile(text: str, message: str, where: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text, kind="go", origin=ORIGIN)
    assert caught.value.message == message
    assert str(caught.value.span) == where
    assert caught.value.hint == "found by test-rendering a sample system/user/assistant conversation"


def test_translation_keeps_go_lines() -> None:
    text = "{{ range .Messages }}\n{{- if eq .Role \"user\" }}U{{ end }}\n{{ .Content }}\n{{ end }}"
    jinja = translate(text).jinja.splitlines()
    assert "go_eq(go_field(it1, 'Role'), 'user')" in jinja[1]
    assert "go_str(go_field(it1, 'Content'))" in jinja[2]


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60).filter(lambda t: "{{" not in t))
def test_text_without_actions_renders_verbatim(text: str) -> None:
    assert render(text) == text


@pytest.mark.parametrize("value, go", [
    (0.1, "0.1"), (100000.0, "100000"), (1e6, "1e+06"), (1e21, "1e+21"), (0.0001, "0.0001"),
    (0.00001, "1e-05"), (-2.5, "-2.5"), (123456789.0, "1.23456789e+08"),
])
def test_float_v_matches_go(value: float, go: str) -> None:
    assert float_v(value) == go


@pytest.mark.parametrize("value, go", [
    (3.0, "3"), (0.5, "0.5"), (1e20, "100000000000000000000"), (1e21, "1e+21"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"),
])
def test_json_float_matches_go(value: float, go: str) -> None:
    assert json_float(value) == go


@pytest.mark.parametrize("fmt, args, go", [
    ("%s", (None,), "%!s(<nil>)"), ("%v", (None,), "<nil>"), ("%c", (65,), "A"), ("%x", ("hi",), "6869"),
    ("%+d", (3,), "+3"), ("%.2f", (3.14159,), "3.14"), ("%e", (1234.5,), "1.234500e+03"), ("%%", (), "%"),
    ("%-5s|", ("ab",), "ab   |"), ("%.2s", ("hello",), "he"), ("%z", (1,), "%!z(int=1)"),
])
def test_sprintf_matches_go(fmt: str, args: tuple[Any, ...], go: str) -> None:
    assert sprintf(fmt, *args) == go


_PIECES = ["{{", "}}", "{{- ", " -}}", " ", ".", ".Messages", ".Role", ".Content", "$", "$x", ":=", "=", "|",
           "(", ")", ",", '"s"', "`r`", "'c'", "1", "-2", "1.5", "if", "else", "end", "range", "with", "define",
           "template", "block", "break", "continue", "nil", "eq", "and", "len", "index", "slice", "printf",
           "/*", "*/", "\n", "x", "{", "%", "#", "٣", "\\", '"']


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_PIECES), max_size=20))
def test_any_text_translates_or_fails_with_a_template_error(parts: list[str]) -> None:
    """No input crashes the translator or the renderer with anything but a TemplateError."""
    try:
        compile_template("".join(parts), kind="go").render([{"role": "user", "content": "hi"}])
    except TemplateError as e:
        assert e.span is not None


def test_errors_and_templates_pickle() -> None:
    template = compile_template("{{ range .Messages }}{{ .Content }}{{ end }}", origin=ORIGIN)
    assert pickle.loads(pickle.dumps(template)).render([{"role": "user", "content": "a"}]) == "a"
    with pytest.raises(TemplateError) as caught:
        translate("{{ end }}", origin=ORIGIN)
    assert pickle.loads(pickle.dumps(caught.value)).render() == caught.value.render()
