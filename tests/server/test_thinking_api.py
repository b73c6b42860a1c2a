"""Thinking over the APIs: `think` on /api/chat and /api/generate, `reasoning_effort`/`reasoning`
on /v1/chat/completions, streamed and merged, through raw HTTP and the official `ollama` and
`openai` clients. The scripted engine writes `<think>a</think>b` in chunks that split the tags."""

from __future__ import annotations

import json
from pathlib import Path

import ollama
import openai
import pytest

from corral.dsl import parse_modelfile
from corral.store.create import create_model
from tests.ggufs import write_tiny_llama
from tests.server.conftest import CPU
from tests.server.test_native_api import lines
from tests.server.test_openai_api import events

# Qwen3's way: thinking on unless enable_thinking is false, when the prompt closes an empty block.
QWEN3 = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
         "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
# DeepSeek-R1's way: the prompt opens the thinking, so the output starts inside it.
R1 = "{% for m in messages %}<|User|>{{ m.content }}{% endfor %}<|Assistant|><think>\n"
HARMONY = "{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}<|start|>assistant"

SPLIT = ["<th", "ink>\n", "a", "</thi", "nk>", "\n\nb"]  # <think>a</think>b, tags split across tokens
USER = [{"role": "user", "content": "Hi"}]


def define(fake, tmp_path: Path, name: str, template: str, extra: str = "") -> None:
    write_tiny_llama(tmp_path / f"{name}.gguf")
    text = f'FROM ./{name}.gguf\nTEMPLATE """{template}"""\n{extra}'
    create_model(fake.store, name, parse_modelfile(text, str(tmp_path / f"{name}.Modelfile")).definition,
                 base_dir=tmp_path, options=CPU)


@pytest.fixture
def thinker(fake, tmp_path):
    define(fake, tmp_path, "thinker", QWEN3)
    fake.engines.pieces = SPLIT
    return fake


def test_chat_streams_thinking_apart_from_content(thinker):
    chunks = lines(thinker.client.post("/api/chat", json={"model": "thinker", "messages": USER, "think": True}))
    messages = [c["message"] for c in chunks]
    assert "".join(m.get("thinking", "") for m in messages) == "a"
    assert "".join(m["content"] for m in messages) == "b"
    assert [m for m in messages if m.get("thinking")] == [{"role": "assistant", "content": "", "thinking": "a"}]
    assert chunks[-1]["done"] is True and "thinking" not in chunks[-1]["message"]


def test_chat_without_streaming_carries_message_thinking(thinker):
    body = thinker.client.post("/api/chat", json={"model": "thinker", "messages": USER, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "b", "thinking": "a"}  # think unset: it thinks


@pytest.mark.parametrize("stream", [True, False])
def test_generate_carries_thinking(thinker, stream):
    r = thinker.client.post("/api/generate", json={"model": "thinker", "prompt": "Hi", "think": "high",
                                                    "stream": stream})
    chunks = lines(r) if stream else [r.json()]
    assert "".join(c.get("thinking", "") for c in chunks) == "a"
    assert "".join(c["response"] for c in chunks) == "b"


def test_think_false_turns_thinking_off_in_the_template(thinker):
    thinker.engines.pieces = ["b"]
    body = thinker.client.post("/api/chat", json={"model": "thinker", "messages": USER, "think": False,
                                                  "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "b"}
    assert thinker.engines.requests[-1].prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    thinker.client.post("/api/chat", json={"model": "thinker", "messages": USER, "stream": False})
    assert thinker.engines.requests[-1].prompt.endswith("<|im_start|>assistant\n")


def test_think_false_drops_what_a_model_thinks_anyway(fake, tmp_path):
    define(fake, tmp_path, "oss", HARMONY, "PARSER harmony\n")  # gpt-oss cannot be told not to think
    fake.engines.pieces = ["<|channel|>analysis<|message|>Easy.<|end|>", "<|start|>assistant<|channel|>final",
                           "<|message|>4"]
    body = fake.client.post("/api/chat", json={"model": "oss", "messages": USER, "think": False,
                                               "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "4"}


def test_r1_output_starts_inside_the_thinking(fake, tmp_path):
    define(fake, tmp_path, "r1", R1)
    fake.engines.pieces = ["Let me", " see.</th", "ink>\n\n", "4"]
    body = fake.client.post("/api/chat", json={"model": "r1", "messages": USER, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "4", "thinking": "Let me see."}


def test_harmony_channels_by_parser(fake, tmp_path):
    define(fake, tmp_path, "oss", HARMONY, "PARSER harmony\n")
    fake.engines.pieces = ["<|channel|>analysis<|mess", "age|>Easy.<|end|><|start|>assistant",
                           "<|channel|>final<|message|>", "4"]
    body = fake.client.post("/api/chat", json={"model": "oss", "messages": USER, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "4", "thinking": "Easy."}
    # harmony's headers are control tokens, which the engine drops from text unless asked
    assert [r.render_special for r in fake.engines.requests] == [True]


def test_only_harmony_asks_for_control_tokens(thinker):
    thinker.client.post("/api/chat", json={"model": "thinker", "messages": USER, "stream": False})
    assert [r.render_special for r in thinker.engines.requests] == [False]


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def test_a_harmony_tool_call_reaches_the_client_as_a_call(fake, tmp_path):
    # gpt-oss addresses a call to the tool in the message header and ends it with <|call|>, an
    # end-of-generation token, so the text stops before it.
    define(fake, tmp_path, "oss", "{% if tools %}<|start|>developer<|message|>{{ tools | tojson }}<|end|>{% endif %}"
           + HARMONY, "PARSER harmony\n")
    fake.engines.pieces = ["<|channel|>analysis<|message|>Need the weather.<|end|>", "<|start|>assistant",
                           "<|channel|>commentary to=functions.get_weather <|constrain|>json", "<|message|>",
                           '{"city": ', '"Paris"}']
    reply = ollama.Client(host=fake.url).chat(model="oss", messages=USER, tools=[WEATHER], think=True)
    assert reply.message.thinking == "Need the weather."
    assert not reply.message.content
    assert [(c.function.name, dict(c.function.arguments)) for c in reply.message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]


# -- format with thinking: the model thinks first, then the grammar holds its answer -----------------

def thinks_then_answers(fake, pieces: list[str]) -> None:
    fake.engines.honour_stops = True  # the engine ends a generation at a stop string, as the real one
    fake.engines.pieces = pieces
    fake.engines.grammar_pieces = ['{"answer": ', "4}"]


@pytest.mark.parametrize("fmt", ["json", {"type": "object", "properties": {"answer": {"type": "integer"}}}])
def test_format_holds_only_the_answer_after_the_thinking(thinker, fmt):
    thinks_then_answers(thinker, ["<think>\nTwo and two.\n", "</think>", "never generated"])
    reply = ollama.Client(host=thinker.url).chat(model="thinker", messages=USER, format=fmt)
    assert (reply.message.thinking, reply.message.content) == ("Two and two.\n", '{"answer": 4}')
    first, second = thinker.engines.requests
    assert first.grammar is None and "</think>" in first.stop
    assert second.grammar is not None and second.prompt == first.prompt + "<think>\nTwo and two.\n</think>\n\n"
    assert reply.eval_count == 1 + 2  # the thinking's token and the answer's two


@pytest.mark.parametrize("pieces, sent", [(["Sure", ", here it is"], ""), (["\n", "Sure"], "\n")])
def test_a_model_that_answers_without_thinking_answers_again_under_the_format(thinker, pieces, sent):
    """The second generation continues from what the first had sent, so the reply's context holds
    exactly the text that was generated."""
    thinks_then_answers(thinker, pieces)
    reply = ollama.Client(host=thinker.url).chat(model="thinker", messages=USER, format="json")
    assert (reply.message.thinking, reply.message.content) == (None, '{"answer": 4}')
    first, second = thinker.engines.requests
    assert second.prompt == first.prompt + sent and second.grammar is not None


def test_a_harmony_model_that_opens_its_final_channel_at_once_is_not_given_it_twice(fake, tmp_path):
    define(fake, tmp_path, "oss", HARMONY, "PARSER harmony\n")
    thinks_then_answers(fake, ["<|channel|>final<|message|>", "Sure"])
    body = {"model": "oss", "prompt": "Hi", "format": "json", "stream": False}
    assert fake.client.post("/api/generate", json=body).json()["response"] == '{"answer": 4}'
    first, second = fake.engines.requests
    assert second.prompt == first.prompt + "<|channel|>final<|message|>"
    # the context is the prompt and the reply as generated: the header once
    assert fake.engines.tokenized[-1] == second.prompt + '{"answer": 4}'


def test_format_with_think_false_is_one_generation_under_the_format(thinker):
    thinks_then_answers(thinker, ["unused"])
    body = {"model": "thinker", "messages": USER, "format": "json", "think": False, "stream": False}
    assert thinker.client.post("/api/chat", json=body).json()["message"]["content"] == '{"answer": 4}'
    [only] = thinker.engines.requests
    assert only.grammar is not None


def test_harmony_thinks_in_analysis_then_answers_in_final_under_the_format(fake, tmp_path):
    define(fake, tmp_path, "oss", HARMONY, "PARSER harmony\n")
    thinks_then_answers(fake, ["<|channel|>analysis<|message|>", "Easy.", "<|end|>", "never generated"])
    body = {"model": "oss", "messages": USER, "format": "json", "stream": False}
    message = fake.client.post("/api/chat", json=body).json()["message"]
    assert (message["thinking"], message["content"]) == ("Easy.", '{"answer": 4}')
    first, second = fake.engines.requests
    assert second.prompt == (first.prompt + "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant"
                             "<|channel|>final<|message|>")


@pytest.mark.parametrize("think", [True, "high"])
def test_think_on_a_model_without_thinking_is_400(fake, think):
    for path, body in (("/api/chat", {"messages": USER}), ("/api/generate", {"prompt": "Hi"})):
        r = fake.client.post(path, json={"model": "smol", "think": think, **body})
        assert r.status_code == 400 and r.json() == {"error": '"smol:latest" does not support thinking'}


def test_the_ollama_client_reads_message_thinking(thinker):
    client = ollama.Client(host=thinker.url)
    response = client.chat(model="thinker", messages=USER, think=True)
    assert (response.message.thinking, response.message.content) == ("a", "b")
    parts = list(client.chat(model="thinker", messages=USER, think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "a"
    assert "".join(p.message.content or "" for p in parts) == "b"
    assert client.generate(model="thinker", prompt="Hi", think=True).thinking == "a"
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="smol", messages=USER, think=True)
    assert e.value.status_code == 400


def test_openai_message_reasoning(thinker):
    with openai.OpenAI(base_url=thinker.url + "/v1", api_key="x", max_retries=0) as client:
        done = client.chat.completions.create(model="thinker", messages=USER, reasoning_effort="high")
        message = done.choices[0].message
        assert message.content == "b" and message.model_extra["reasoning"] == "a"
        stream = client.chat.completions.create(model="thinker", messages=USER, stream=True)
        deltas = [c.choices[0].delta for c in stream if c.choices]
        assert "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas) == "a"
        assert "".join(d.content or "" for d in deltas) == "b"
        assert deltas[0].role == "assistant"


def test_openai_stream_sends_reasoning_deltas_before_content(thinker):
    r = thinker.client.post("/v1/chat/completions", json={"model": "thinker", "messages": USER, "stream": True})
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events(r)[:-1]]
    assert [d for d in deltas if d] == [{"role": "assistant", "reasoning": "a"}, {"content": "b"}]


@pytest.mark.parametrize("body", [{"reasoning_effort": "none"}, {"reasoning": {"effort": "none"}},
                                  {"reasoning_effort": "high", "reasoning": {"effort": "none"}}])
def test_openai_effort_none_is_think_false(thinker, body):
    r = thinker.client.post("/v1/chat/completions", json={"model": "thinker", "messages": USER, **body})
    assert "reasoning" not in r.json()["choices"][0]["message"]
    assert thinker.engines.requests[-1].prompt.endswith("<think>\n\n</think>\n\n")


def test_openai_reasoning_on_a_model_without_thinking_is_400(fake):
    r = fake.client.post("/v1/chat/completions", json={"model": "smol", "messages": USER,
                                                       "reasoning": {"effort": "low"}})
    assert r.status_code == 400 and "does not support thinking" in r.json()["error"]["message"]


def test_openai_reasoning_in_history_reaches_the_template(fake, tmp_path):
    define(fake, tmp_path, "goth", '{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>'
                                   '{{ end }}{{ .Content }}{{ end }}')
    fake.client.post("/v1/chat/completions", json={"model": "goth", "messages": [
        {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning": "R"},
        {"role": "user", "content": "Q2"}]})
    assert fake.engines.requests[-1].prompt == "Q<think>R</think>AQ2"


def test_the_repl_sets_think_and_nothink_and_shows_the_thinking(thinker, capsys):
    from corral.cli.client import Client
    from corral.cli.repl import Repl
    from corral.cli.session import ServerSession

    lines_in = iter(["/set think high", "Hi", "/set nothink", "Hi again", "/bye"])
    with Client(thinker.url) as client:
        repl = Repl(ServerSession(client, "thinker", None), read=lambda _prompt: next(lines_in), history=False)
        thinker.engines.pieces = SPLIT
        repl.loop()
    out = capsys.readouterr().out
    assert "Set 'think' mode to 'high'." in out and "Set 'nothink' mode." in out
    assert "Thinking...\na\n...done thinking.\n\nb\n\n" in out
    assert thinker.engines.requests[-1].prompt.endswith("<think>\n\n</think>\n\n")  # nothink reached the template
    assert repl.messages[1] == {"role": "assistant", "content": "b"}


@pytest.mark.parametrize("think, effort", [("max", "high"), ("low", "low"), (True, "")])
def test_gpt_oss_gets_its_effort_and_max_is_high(fake, tmp_path, think, effort):
    define(fake, tmp_path, "oss", "Reasoning: {{ reasoning_effort | default('') }}" + HARMONY, "PARSER harmony\n")
    fake.client.post("/api/chat", json={"model": "oss", "messages": USER, "think": think, "stream": False})
    assert fake.engines.requests[-1].prompt.startswith(f"Reasoning: {effort}<|start|>")
