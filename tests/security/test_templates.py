"""Hostile chat templates: escapes from the sandbox, endless loops, explosive output.

Each is refused with its own clear message: when the model is created (the compiler test-renders
every template), or, for a template that behaves until a request sets it off, in the answer to
that request (a 400 JSON error naming the template), within the sandbox's time cap; nothing runs
outside the sandbox and the server keeps answering. The caps are compiler/templates/sandbox.py's
MAX_RENDER_SECONDS and MAX_OUTPUT_CHARS.
"""

from __future__ import annotations

import hashlib

import pytest

from corral.compiler.errors import TemplateError
from corral.compiler.templates.chat import compile_template
from corral.compiler.templates.sandbox import MAX_OUTPUT_CHARS
from tests.ggufs import TinyLlama, write_tiny_llama
from tests.security.conftest import assert_refused

UNSAFE = "template attempted an unsafe operation: access to attribute "
TOO_BIG = f"template stopped: the template would build a value of 10000000000 items (the limit is {MAX_OUTPUT_CHARS})"
TOO_LONG = "template stopped: the template ran for more than 1 s"
WIDE = "template stopped: the template formats with a width or precision of 8 or more digits"

# (case, Jinja template, the exact message)
JINJA = [
    ("cycler globals", "{{ cycler.__init__.__globals__ }}", UNSAFE + "'__init__' of 'type' object is unsafe."),
    ("str mro", "{{ ''.__class__.__mro__ }}", UNSAFE + "'__class__' of 'str' object is unsafe."),
    ("lipsum globals", "{{ lipsum.__globals__ }}", UNSAFE + "'__globals__' of 'function' object is unsafe."),
    ("template reference", "{{ self._TemplateReference__context }}",
     UNSAFE + "'_TemplateReference__context' of 'TemplateReference' object is unsafe."),
    ("joiner os", "{{ joiner.__init__.__globals__.os }}", UNSAFE + "'__init__' of 'type' object is unsafe."),
    ("namespace globals", "{{ namespace.__init__.__globals__ }}", UNSAFE + "'__init__' of 'type' object is unsafe."),
    ("attr filter", "{{ ''|attr('__class__')|attr('__mro__') }}", UNSAFE + "'__class__' of 'str' object is unsafe."),
    ("attr filter chain", "{{ (cycler|attr('__init__'))|attr('__globals__') }}",
     UNSAFE + "'__init__' of 'type' object is unsafe."),
    ("messages internals", "{{ messages.__class__.__base__.__subclasses__() }}",
     UNSAFE + "'__class__' of 'list' object is unsafe."),
    ("format escape", "{{ '{0.__class__}'.format(messages) }}", UNSAFE + "'__class__' of 'list' object is unsafe."),
    ("range of 10**12", "{% for i in range(10**12) %}x{% endfor %}",
     "template failed: OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000)."),
    ("endless recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "template stopped: RecursionError"),
    ("branching recursion", "{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
     "{{ f(0) }}", TOO_LONG),
    ("nested loops", "{% for i in range(100000) %}{% for j in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endfor %}",
     "template stopped: the template's output passed 4194304 characters"),
    ("silent nested loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     TOO_LONG),
    ("string times 10**10", "{{ 'x' * 10**10 }}", TOO_BIG),
    ("list times 10**10", "{{ ([1] * 10**10)|length }}", TOO_BIG),
    ("huge power", "{{ 10 ** 100000 }}", "template stopped: the template computes 10 ** 100000, a number too large"),
    ("doubling", "{% set ns = namespace(x='x') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}"
     "{{ ns.x|length }}", "template stopped: the template would build a value of 8388608 items (the limit is 4194304)"),
    ("center filter", "{{ 'x'|center(10**10) }}", TOO_BIG),
    ("center method", "{{ 'x'.center(10**10) }}", TOO_BIG),
    ("star width", "{{ '%*d'|format(10**10, 1) }}", TOO_BIG),
    ("wide format", "{{ '%10000000000d' % 1 }}", WIDE),
    ("wide str.format", "{{ '{:10000000000}'.format(1) }}", WIDE),
    ("join of a repeated list", "{{ (['x' * 4000000] * 4000000)|join }}",
     "template stopped: the template would build a value of 16000000000000 items (the limit is 4194304)"),
    ("replace explosion", "{{ ('x' * 4000000)|replace('x', 'yyyyyyyyyy') }}",
     "template stopped: the template would build a value of 44000000 items (the limit is 4194304)"),
    ("lipsum of 10**9", "{{ lipsum(10**9) }}",
     "template stopped: the template would build a value of 1000000000 items (the limit is 4194304)"),
]

# (case, Go template, the exact message): Go templates are translated to Jinja, so Jinja syntax
# in them is plain text, and a field is a map or struct lookup, never a Python attribute.
GO = [
    ("jinja globals are not Go functions", "{{ cycler.__init__.__globals__ }}", "function 'cycler' not defined"),
    ("call", "{{ call .Messages }}", "function 'call' is not supported"),
    ("field internals", "{{ .Messages.__class__.__mro__ }}",
     "template failed: can't evaluate field __class__ in type []interface {}"),
    ("self-invoking template", '{{ define "a" }}{{ template "a" . }}{{ end }}{{ template "a" . }}',
     "template 'a' invokes itself"),
    ("wide printf", '{{ printf "%10000000000d" 1 }}', WIDE),
    ("star printf", '{{ printf "%*d" 10000000000 1 }}', TOO_BIG),
]


@pytest.mark.parametrize("source, message", [c[1:] for c in JINJA], ids=[c[0] for c in JINJA])
def test_hostile_jinja_is_refused_when_compiled(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(source, kind="jinja")
    assert caught.value.message == message


@pytest.mark.parametrize("source, message", [c[1:] for c in GO], ids=[c[0] for c in GO])
def test_hostile_go_templates_are_refused_when_compiled(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(source, kind="go")
    assert caught.value.message == message


@pytest.mark.parametrize("source", [
    "{{ .__class__ }}{{ .Prompt }}",  # a missing map key, as in Go
    "{% for i in range(10**12) %}{{ .Prompt }}{% endfor %}",  # Jinja syntax is text in a Go template
])
def test_go_templates_cannot_reach_python(source: str) -> None:
    prompt = compile_template(source, kind="go").render([{"role": "user", "content": "hi"}])
    assert prompt == source.split("{{ .Prompt }}")[0].replace("{{ .__class__ }}", "<no value>") + "hi" + (
        "{% endfor %}" if "endfor" in source else "")


# Wrapped in a block tag: a template made only of {{ }} actions is read as a Go template.
CREATE_CASES = [(c[0], "{% if messages %}" + c[1] + "{% endif %}", c[2]) for c in JINJA if c[0] in ("cycler globals", "str mro", "lipsum globals", "attr filter",
                                             "silent nested loops", "string times 10**10")]


@pytest.mark.parametrize("source, message", [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_create_with_a_hostile_modelfile_template_is_400(fake, source: str, message: str) -> None:
    r = fake.client.post("/api/create", json={"model": "hostile", "from": "smol", "template": source, "stream": False})
    assert message in assert_refused(fake, r, 400)["error"]


@pytest.mark.parametrize("source, message", [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_create_from_a_gguf_with_a_hostile_chat_template_is_400(fake, tmp_path, source: str, message: str) -> None:
    data = write_tiny_llama(tmp_path / "hostile.gguf", TinyLlama(chat_template=source)).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert fake.client.post(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
    r = fake.client.post("/api/create", json={"model": "hostile", "files": {"m.gguf": digest}, "stream": False})
    assert message in assert_refused(fake, r, 400)["error"]


# Harmless on the sample conversations the compiler renders; a trap for one message.
TRAP = ("{% for m in messages %}{% if m.content == 'boom' %}{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}{% endif %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:")


@pytest.mark.parametrize("route, body", [
    ("/api/chat", {"messages": [{"role": "user", "content": "boom"}], "stream": False}),
    ("/api/chat", {"messages": [{"role": "user", "content": "boom"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "boom"}]}),
])
def test_a_template_that_loops_on_one_request_is_stopped_with_an_error(fake, route: str, body: dict) -> None:
    r = fake.client.post("/api/create", json={"model": "trap", "from": "smol", "template": TRAP, "stream": False})
    assert r.status_code == 200, r.text
    r = fake.client.post(route, json={"model": "trap", **body})
    answer = assert_refused(fake, r, 400)
    message = answer["error"]["message"] if isinstance(answer["error"], dict) else answer["error"]
    assert TOO_LONG in message
    assert fake.engines.requests == []  # nothing reached the engine
    assert compile_template(TRAP).render([{"role": "user", "content": "hi"}]) == "user: hi\nassistant:"
