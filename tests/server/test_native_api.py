"""The native API over the real runtime with scripted engines: framing, statistics, prompts,
options, load/unload, tools. Expected statistics and texts come from the engines' script."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

import corral.store.create
from corral.engine.errors import EngineError
from corral.compiler.gguf.info import parameter_size_label
from corral.config.durations import FOREVER
from corral.server.streaming import rfc3339nano
from tests.ggufs import TinyLlama
from corral.runtime.structured import json_grammar

RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def unit(vector) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector]


def lines(response) -> list[dict]:
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


def test_generate_streams_ndjson_with_final_statistics(fake):
    r = fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    chunks = lines(r)
    script = fake.engines
    assert [c["response"] for c in chunks] == [*script.pieces, ""]
    assert all(c["model"] == "smol" and RFC3339NANO.match(c["created_at"]) for c in chunks)
    assert [c["done"] for c in chunks] == [False] * len(script.pieces) + [True]
    final = chunks[-1]
    assert final["done_reason"] == script.done_reason
    assert (final["prompt_eval_count"], final["eval_count"]) == (script.prompt_eval_count, len(script.pieces))
    assert (final["prompt_eval_duration"], final["eval_duration"]) == (script.prompt_eval_duration,
                                                                       script.eval_duration)
    assert final["total_duration"] > 0 and final["load_duration"] == script.load_duration_ns  # this request loaded it
    again = lines(fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi"}))[-1]
    assert "load_duration" not in again  # loaded already: zero, omitted as Go's omitempty does


def test_generate_without_streaming_concatenates(fake):
    r = fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False})
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["response"] == "".join(fake.engines.pieces) and body["done"] is True
    assert body["eval_count"] == len(fake.engines.pieces)


def test_generate_prompt_system_and_raw(fake):
    fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False})
    fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "system": "Be terse.", "stream": False})
    fake.client.post("/api/generate", json={"model": "smol", "prompt": "<raw>", "raw": True, "stream": False})
    prompts = [r.prompt for r in fake.engines.requests]
    assert prompts[0] == ("<|im_start|>system\nYou are Smol.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                          "<|im_start|>assistant\n")
    assert prompts[1].startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert prompts[2] == "<raw>"


def test_options_reach_the_engine(fake):
    fake.client.post("/api/chat", json={**CHAT, "stream": False, "options": {"temperature": 0, "seed": 3,
                                                                              "num_predict": 9, "stop": ["END"]}})
    fake.client.post("/api/chat", json={**CHAT, "stream": False})
    first, second = fake.engines.requests
    assert (first.sampling.temperature, first.sampling.seed, first.sampling.num_predict) == (0.0, 3, 9)
    assert first.stop == ("END",)
    assert second.stop == fake.models.spec("smol").stop  # the model's own: its PARAMETER stop and its EOS
    assert "<|im_end|>" in second.stop and second.sampling.temperature == 0.8  # Ollama's default


@pytest.mark.parametrize("keep_alive, seconds", [(None, None), ("10m", 600.0), (30, 30.0), (-1, FOREVER), ("0", 0.0)])
def test_keep_alive_sets_how_long_the_model_stays(fake, keep_alive, seconds):
    body = {**CHAT, "stream": False}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    before = datetime.now(timezone.utc)
    fake.client.post("/api/chat", json=body)
    after = datetime.now(timezone.utc)
    running = fake.client.get("/api/ps").json()["models"]
    if seconds == 0:
        assert running == [] and fake.engines.closed == ["smol:latest"]
        return
    expires = datetime.fromisoformat(running[0]["expires_at"])
    if seconds == FOREVER:
        assert expires.year > 2200  # kept until stopped
        return
    stays = timedelta(seconds=seconds or fake.settings.keep_alive_seconds)  # None: the server's default
    slack = timedelta(seconds=1)  # expires_at is computed from a monotonic deadline when asked
    assert before + stays - slack <= expires <= after + stays + slack


@pytest.mark.parametrize("path, body, key", [
    ("/api/generate", {"model": "smol"}, "response"),
    ("/api/chat", {"model": "smol", "messages": []}, "message"),
])
def test_empty_prompt_loads_and_keep_alive_zero_unloads(fake, path, body, key):
    r = fake.client.post(path, json=body)
    assert r.json()["done_reason"] == "load" and r.json()["done"] is True
    assert [m["name"] for m in fake.client.get("/api/ps").json()["models"]] == ["smol:latest"]
    assert fake.engines.started == ["smol:latest"] and fake.engines.requests == []
    r = fake.client.post(path, json={**body, "keep_alive": 0})
    assert r.json()["done_reason"] == "unload" and fake.engines.closed == ["smol:latest"]
    assert fake.client.get("/api/ps").json() == {"models": []}
    assert r.json()[key] in ("", {"role": "assistant", "content": ""})
    assert fake.client.post(path, json={**body, "model": "nope"}).status_code == 404


def test_chat_streams_messages(fake):
    chunks = lines(fake.client.post("/api/chat", json=CHAT))
    assert [c["message"] for c in chunks[:-1]] == [{"role": "assistant", "content": t} for t in fake.engines.pieces]
    assert chunks[-1]["message"] == {"role": "assistant", "content": ""} and chunks[-1]["done_reason"] == "stop"


def test_chat_without_streaming(fake):
    body = fake.client.post("/api/chat", json={**CHAT, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "".join(fake.engines.pieces)} and body["done"] is True
    assert RFC3339NANO.match(body["created_at"])


def test_length_done_reason(fake):
    fake.engines.done_reason = "length"
    assert fake.client.post("/api/chat", json={**CHAT, "stream": False}).json()["done_reason"] == "length"


def test_format_becomes_a_grammar(fake):
    fake.client.post("/api/chat", json={**CHAT, "stream": False, "format": "json"})
    fake.client.post("/api/chat", json={**CHAT, "stream": False, "format": {"type": "object", "properties": {
        "n": {"type": "integer"}}, "required": ["n"]}})
    fake.client.post("/api/chat", json={**CHAT, "stream": False, "format": ""})
    grammars = [r.grammar for r in fake.engines.requests]
    assert grammars[0] == json_grammar()
    assert '"\\"n\\""' in grammars[1] and "root ::=" in grammars[1]
    assert grammars[2] is None


def test_images_are_refused_for_text_only_models(fake):
    r = fake.client.post("/api/chat", json={"model": "smol", "messages": [{"role": "user", "content": "x",
                                                                            "images": ["aGk="]}]})
    assert r.status_code == 400
    assert r.json()["error"] == ('"smol:latest" does not support images: it is a text-only model, '
                                 "so send the request without images")
    r = fake.client.post("/api/generate", json={"model": "smol", "prompt": "x", "images": ["aGk="]})
    assert r.status_code == 400 and "does not support images" in r.json()["error"]
    assert fake.engines.requests == []


def test_thinking_is_refused_and_false_is_fine(fake):
    r = fake.client.post("/api/chat", json={**CHAT, "think": True})
    assert r.status_code == 400 and r.json() == {"error": '"smol:latest" does not support thinking'}
    assert fake.client.post("/api/chat", json={**CHAT, "think": False, "stream": False}).status_code == 200


def test_tool_calls_are_extracted(fake):
    fake.engines.pieces = ['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}']
    body = fake.client.post("/api/chat", json={**CHAT, "tools": [WEATHER], "stream": False}).json()
    call = body["message"]["tool_calls"][0]
    assert body["message"]["content"] == ""
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    chunks = lines(fake.client.post("/api/chat", json={**CHAT, "tools": [WEATHER]}))
    assert [c["message"].get("tool_calls", [{}])[0].get("function", {}).get("name") for c in chunks] == \
        ["get_weather", None]
    assert chunks[-1]["done"] is True


def test_text_answers_stream_while_tools_are_offered(fake):
    chunks = lines(fake.client.post("/api/chat", json={**CHAT, "tools": [WEATHER]}))
    assert "".join(c["message"]["content"] for c in chunks) == "".join(fake.engines.pieces)
    assert len(chunks) == len(fake.engines.pieces) + 1  # text was not held back until the end


def test_tools_for_a_template_without_tool_support(fake):
    fake.client.post("/api/chat", json={**CHAT, "tools": [WEATHER], "stream": False})
    request = fake.engines.requests[0]
    assert request.prompt.startswith("<|im_start|>system\nYou are Smol.\n\nYou can call these tools:\n")
    assert '"name": "get_weather"' in request.prompt
    assert request.grammar.startswith("root ::= corral-call | corral-text")


def test_tools_for_a_template_with_tool_support(fake):
    fake.client.post("/api/chat", json={**CHAT, "model": "toolsmodel", "tools": [WEATHER], "stream": False})
    request = fake.engines.requests[0]
    assert request.prompt.startswith("<|im_start|>system\n# Tools\nget_weather\n")
    assert request.grammar is None


def test_tool_results_in_history_become_text_for_plain_templates(fake):
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    fake.client.post("/api/chat", json={"model": "smol", "messages": messages, "tools": [WEATHER], "stream": False})
    prompt = fake.engines.requests[0].prompt
    assert '<|im_start|>assistant\n{"name": "get_weather", "arguments": {"city": "Paris"}}<|im_end|>' in prompt
    assert "<|im_start|>user\nResult of get_weather: sunny<|im_end|>" in prompt


def test_an_error_after_streaming_started_is_the_last_line(fake):
    fake.engines.fail_after = EngineError("the model worker crashed")
    r = fake.client.post("/api/chat", json=CHAT)
    assert r.status_code == 200
    assert lines(r) == [lines(r)[0], {"error": "the model worker crashed"}]
    r = fake.client.post("/api/chat", json={**CHAT, "stream": False})
    assert r.status_code == 500 and r.json() == {"error": "the model worker crashed"}
    assert fake.in_flight() == 0 and fake.engines.closed == []  # the model stays loaded for the next request


def test_a_client_that_disconnects_frees_its_slot(fake):
    fake.engines.endless = True
    with fake.client.stream("POST", "/api/chat", json=CHAT) as r:
        it = r.iter_lines()
        assert json.loads(next(it))["message"]["content"] == fake.engines.pieces[0]
        assert fake.in_flight() == 1
    assert fake.engines.stream_closed.wait(30)
    # The lease ends in the same step of the server's loop as the engine's stream, before in_flight runs.
    assert fake.engines.closed_early == 1 and fake.in_flight() == 0
    assert fake.engines.finished == 0


def test_embed_normalizes_and_cuts(fake):
    body = fake.client.post("/api/embed", json={"model": "smol", "input": ["a", "b"]}).json()
    assert body["model"] == "smol" and body["embeddings"] == [unit(fake.engines.vector)] * 2
    assert body["prompt_eval_count"] == 2 * fake.engines.tokens_per_input and body["total_duration"] > 0
    assert [r.normalize for r in fake.engines.embedded] == [True]
    cut = fake.client.post("/api/embed", json={"model": "smol", "input": "a", "dimensions": 1}).json()
    assert cut["embeddings"] == [[1.0]]  # cut to one number and normalized again
    fake.client.post("/api/generate", json={"model": "smol", "keep_alive": 0})
    empty = fake.client.post("/api/embed", json={"model": "smol", "input": ""}).json()
    assert empty["embeddings"] == [] and len(fake.engines.embedded) == 2  # loaded, nothing embedded
    assert [m["name"] for m in fake.client.get("/api/ps").json()["models"]] == ["smol:latest"]


def test_legacy_embeddings_are_not_normalized(fake):
    assert fake.client.post("/api/embeddings", json={"model": "smol", "prompt": "a"}).json() == \
        {"embedding": list(fake.engines.vector)}
    assert [r.normalize for r in fake.engines.embedded] == [False]
    assert fake.client.post("/api/embeddings", json={"model": "smol", "prompt": ""}).json() == {"embedding": []}


def test_tags_show_ps_version(fake):
    tags = {m["name"]: m for m in fake.client.get("/api/tags").json()["models"]}
    assert set(tags) == {"smol:latest", "toolsmodel:latest"}
    smol = fake.store.get("smol")
    assert tags["smol:latest"]["digest"] == smol.digest and tags["smol:latest"]["size"] == smol.size
    assert tags["smol:latest"]["modified_at"] == rfc3339nano(smol.modified_at)
    assert tags["smol:latest"]["details"]["parameter_size"] == parameter_size_label(TinyLlama().parameter_count)
    assert tags["smol:latest"]["details"]["format"] == "gguf"
    show = fake.client.post("/api/show", json={"model": "smol"}).json()
    assert show["system"] == "You are Smol." and show["license"] == "MIT"  # as the Modelfile says
    assert show["details"]["quantization_level"] == TinyLlama().quant
    assert show["capabilities"] == ["completion"]  # ChatML does not render tools
    tools = fake.client.post("/api/show", json={"model": "toolsmodel"}).json()
    assert tools["capabilities"] == ["completion", "tools"] and "license" not in tools  # none: omitted
    assert fake.client.post("/api/show", json={"model": "nope"}).json() == {"error": "model 'nope' not found"}
    assert fake.client.get("/api/ps").json() == {"models": []}
    fake.client.post("/api/chat", json={**CHAT, "stream": False, "keep_alive": -1})
    ps = fake.client.get("/api/ps").json()["models"]
    assert [m["name"] for m in ps] == ["smol:latest"]
    assert ps[0]["context_length"] == fake.models.spec("smol").load.num_ctx
    assert datetime.fromisoformat(ps[0]["expires_at"]).year > 2200  # kept until stopped
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", fake.client.get("/api/version").json()["version"])


def test_root_answers_for_ollama_clients(fake):
    assert fake.client.get("/").text == "Corral is running"
    assert fake.client.head("/").status_code == 200


def test_cors(fake):
    r = fake.client.get("/api/tags", headers={"Origin": "http://localhost:5173"})
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    r = fake.client.options("/api/chat", headers={"Origin": "app://x", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "app://x"
    assert "access-control-allow-origin" not in fake.client.get("/api/tags", headers={"Origin": "https://evil.com"}).headers


def test_blob_upload_verifies_the_digest(fake):
    data = b"weights" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert fake.client.head(f"/api/blobs/{digest}").status_code == 404
    assert fake.client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    assert fake.client.head(f"/api/blobs/{digest}").status_code == 200
    assert fake.client.post(f"/api/blobs/{digest}", content=data).status_code == 200
    other = "sha256:" + "0" * 64
    r = fake.client.post(f"/api/blobs/{other}", content=data)
    assert r.status_code == 400
    assert r.json() == {"error": f'digest mismatch, expected "{other}", got "{digest}"'}
    assert fake.client.head(f"/api/blobs/{other}").status_code == 404


def test_create_streams_progress(fake, monkeypatch):
    seen = {}

    def create_from_request(store, models, name, fields, progress, fetch=None):
        seen.update(name=name, fields=fields)
        progress("parsing GGUF")
        progress({"status": "using existing layer sha256:abc"})
        progress("writing manifest")
        progress("success")
        return "ab" * 32

    monkeypatch.setattr(corral.store.create, "create_from_request", create_from_request, raising=False)
    body = {"model": "mine", "from": "smol", "system": "Be brief.", "parameters": {"temperature": 0.1}}
    statuses = [line["status"] for line in lines(fake.client.post("/api/create", json=body))]
    assert statuses == ["parsing GGUF", "using existing layer sha256:abc", "writing manifest", "success"]
    assert seen == {"name": "mine", "fields": {"from": "smol", "system": "Be brief.",
                                               "parameters": {"temperature": 0.1}}}
    assert fake.client.post("/api/create", json={**body, "stream": False}).json() == {"status": "success"}


@pytest.mark.parametrize("body, message", [
    ({"model": "m"}, "neither 'from' or 'files' was specified"),
    ({"model": "m", "files": {"/etc/x.gguf": "sha256:" + "a" * 64}}, "file path must be relative"),
    ({"model": "m", "files": {"x.gguf": "sha256:xyz"}}, "invalid digest format: 'sha256:xyz'"),
    ({"model": "m", "from": "b", "adapters": {"a": "sha256:" + "a" * 64, "b": "sha256:" + "b" * 64}},
     "only one adapter is currently supported"),
])
def test_create_checks_its_request(fake, body, message):
    r = fake.client.post("/api/create", json=body)
    assert r.status_code == 400 and r.json() == {"error": message}


def test_copy_and_delete_of_a_missing_model(fake):
    r = fake.client.post("/api/copy", json={"source": "ghost", "destination": "other"})
    assert r.status_code == 404
    r = fake.client.request("DELETE", "/api/delete", json={"model": "ghost"})
    assert r.status_code == 404 and r.json() == {"error": "model 'ghost' not found"}
