"""Chat templates against Ollama: its 20 Go templates render byte for byte what Ollama renders,
Hugging Face templates are recognised as Ollama's named templates, and untrusted templates
stay in the sandbox."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.compiler.templates.chat import ChatTemplate, compile_template, detect_kind, known_stops, recognise
from corral.compiler.errors import TemplateError
from corral.compiler.templates.library import levenshtein, library_names, library_template
from corral.dsl.span import Span

GO_TEMPLATES = library_names()  # the package's copy of Ollama's template folder
HF_COUNT = 35  # lines of hf-chat-templates.jsonl

_HELLO = {"role": "user", "content": "Hello, how are you?"}
_GREAT = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
_SHOW = {"role": "user", "content": "I'd like to show off how chat templating works!"}
_SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CASES = {
    "user": [_HELLO],
    "user-assistant-user": [_HELLO, _GREAT, _SHOW],
    "system-user-assistant-user": [_SYSTEM, _HELLO, _GREAT, _SHOW],
}


def test_package_ships_ollamas_templates(conformance: Path) -> None:
    corpus = sorted(p.name for p in (conformance / "templates").iterdir())
    packaged = resources.files("corral.compiler.templates") / "ollama"
    assert len(GO_TEMPLATES) == 20
    for name in corpus:
        assert (packaged / name).read_bytes() == (conformance / "templates" / name).read_bytes(), name
    assert (packaged / "LICENSE.ollama").read_bytes() == (conformance / "LICENSE.ollama").read_bytes()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", GO_TEMPLATES)
def test_go_template_renders_like_ollama(conformance: Path, name: str, case: str) -> None:
    text = (conformance / "templates" / f"{name}.gotmpl").read_text(encoding="utf-8")
    expected = (conformance / "expected" / f"{name}.gotmpl" / case).read_bytes()
    template = compile_template(text)
    assert template.kind == "go"
    assert template.render(CASES[case]).encode("utf-8") == expected


@pytest.mark.parametrize("name", GO_TEMPLATES)
def test_shipped_go_template_is_named(name: str) -> None:
    assert compile_template(library_template(name)).name == name


@pytest.fixture(scope="module")
def hf_templates(conformance: Path) -> list[tuple[str, str]]:
    lines = (conformance / "hf-chat-templates.jsonl").read_text(encoding="utf-8").splitlines()
    return [next(iter(json.loads(line).items())) for line in lines if line.strip()]


def test_hf_template_count(hf_templates: list[tuple[str, str]]) -> None:
    assert len(hf_templates) == HF_COUNT


@pytest.mark.parametrize("index", range(HF_COUNT))
def test_hf_template_is_recognised(hf_templates: list[tuple[str, str]], index: int) -> None:
    name, jinja = hf_templates[index]
    assert recognise(jinja) == name
    template = compile_template(jinja)  # also compiles and test-renders it in the sandbox
    assert (template.kind, template.name) == ("jinja", name)


def test_unrelated_template_is_not_recognised() -> None:
    assert recognise("{% for m in messages %}### " + "x" * 300 + "{{ m.content }}{% endfor %}") is None


@pytest.mark.parametrize("name, stops", [
    ("llama3-instruct", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    ("gemma3-instruct", ("<end_of_turn>",)),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
])
def test_known_stops(name: str, stops: tuple[str, ...]) -> None:
    assert known_stops(name) == stops


def test_known_stops_of_unknown_name() -> None:
    with pytest.raises(KeyError, match="unknown Ollama template 'nope'"):
        known_stops("nope")


@settings(max_examples=200)
@given(st.text(alphabet="abcd", max_size=12), st.text(alphabet="abcde", max_size=80))
def test_levenshtein_matches_the_textbook_algorithm(a: str, b: str) -> None:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    assert levenshtein(a, b) == previous[-1]


# --- Ollama's rendering rules ----------------------------------------------------------
LEGACY = "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}<end>\n"


@pytest.mark.parametrize("messages, expected", [
    ([_SYSTEM, _HELLO, _GREAT, _SHOW],
     f"S:{_SYSTEM['content']} U:{_HELLO['content']} A:{_GREAT['content']}<end>\nU:{_SHOW['content']} A:"),
    ([_HELLO], f"U:{_HELLO['content']} A:"),
    ([_HELLO, _GREAT], f"U:{_HELLO['content']} A:{_GREAT['content']}"),
    ([_HELLO, {"role": "tool", "content": "ignored"}], f"U:{_HELLO['content']} A:"),
], ids=["turns", "one-prompt", "prefilled-response", "tool-skipped"])
def test_legacy_template_runs_turn_by_turn(messages: list[dict[str, str]], expected: str) -> None:
    assert compile_template(LEGACY).render(messages) == expected


def test_template_without_response_gets_one_appended() -> None:
    template = compile_template("<{{ .Prompt }}>")
    assert template.render([_HELLO, _GREAT, _SHOW]) == f"<{_HELLO['content']}>{_GREAT['content']}<{_SHOW['content']}>"


def test_messages_template_has_no_prompt() -> None:
    assert compile_template("{{ .Prompt }}{{ range .Messages }}{{ end }}").render([_HELLO]) == "<no value>"


def test_consecutive_messages_are_collated() -> None:
    template = compile_template("{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}|{{ .System }}")
    messages = [_SYSTEM, {"role": "system", "content": "Two."}, {"role": "user", "content": "a"},
                {"role": "user", "content": "b"}]
    assert template.render(messages) == (
        f"[system:{_SYSTEM['content']}\n\nTwo.][user:a\n\nb]|{_SYSTEM['content']}\n\nTwo.")


@pytest.mark.parametrize("kind_text", ["go", "jinja"])
def test_default_system_goes_first_unless_given(kind_text: str) -> None:
    text = ("{{ range .Messages }}{{ .Role }};{{ end }}" if kind_text == "go"
            else "{% for m in messages %}{{ m.role }};{% endfor %}")
    template = compile_template(text)
    assert template.render([_HELLO], system="Be nice.") == "system;user;"
    assert template.render([_SYSTEM, _HELLO], system="Be nice.") == "system;user;"


def test_hf_template_gets_transformers_variables() -> None:
    text = ("{{ bos_token }}{% for m in messages %}{{ m['content'] | tojson }}{% endfor %}\n"
            "{% if add_generation_prompt %}GO{% endif %}{{ eos_token }}")
    template = compile_template(text)
    assert template.render([{"role": "user", "content": "é<"}], bos_token="<s>", eos_token="</s>") == '<s>"é<"GO</s>'
    assert template.render([_HELLO], add_generation_prompt=False).endswith('"')


@pytest.mark.parametrize("text, kind", [
    ("{{ .Prompt }}", "go"),
    ("{{- range .Messages }}{{ .Content }}{{ end }}", "go"),
    ("{{ if .System }}x{{ end }}", "go"),
    ("{{ $x := 1 }}", "go"),
    ("plain text", "go"),
    ("{% for m in messages %}{{ m.content }}{% endfor %}", "jinja"),
    ("{{ bos_token }}{{ messages[0].content }}", "jinja"),
    ("{# comment #}hi", "jinja"),
])
def test_detect_kind(text: str, kind: str) -> None:
    assert detect_kind(text) == kind


# --- the sandbox and Jinja errors --------------------------------------------------------
ORIGIN = Span("Modelfile", 5, 10)


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% for m in messages %}{{ m.__class__ }}{% endfor %}",
    "{{ messages.append(1) }}",
    "{{ messages[0].update({'role': 'x'}) }}",
])
def test_sandbox_blocks_escapes_at_compile(text: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text, kind="jinja", origin=ORIGIN)
    assert caught.value.message.startswith("template attempted an unsafe operation: ")
    assert str(caught.value.span) == "Modelfile:5:10"


def test_sandbox_error_points_at_its_line() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("{{ bos_token }}\n{% for m in messages %}\n{{ m.__class__.__mro__ }}{% endfor %}",
                         origin=ORIGIN)
    assert str(caught.value.span) == "Modelfile:7:1"


def test_broken_jinja_fails_at_compile_with_its_line() -> None:
    text = "{% for m in messages %}\n{{ m.content }}\n{% endif %}\n"
    with pytest.raises(TemplateError) as caught:
        compile_template(text, origin=ORIGIN)
    error = caught.value
    assert error.message.startswith("invalid Jinja template: Encountered unknown tag 'endif'.")
    assert (error.span.line, error.span.column) == (7, 1)  # type: ignore[union-attr]
    assert error.render().splitlines()[0].startswith("Modelfile:7:1: error: invalid Jinja template")


def test_jinja_that_rejects_every_sample_fails_at_compile() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("x\n{{ raise_exception('no chat here') }}")
    assert caught.value.message == "template raised an error: no chat here"
    assert caught.value.span.line == 2  # type: ignore[union-attr]


def test_jinja_that_rejects_system_still_compiles() -> None:
    text = ("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
            "{% for m in messages %}{{ m.content }}{% endfor %}")
    template = compile_template(text)
    with pytest.raises(TemplateError, match="System role not supported"):
        template.render([_SYSTEM, _HELLO])


def test_chat_template_is_plain_data() -> None:
    template = compile_template("{{ range .Messages }}{{ .Content }}{{ end }}")
    assert template == ChatTemplate(template.source, "go", template.jinja, None)
    assert "go=" not in repr(template)
