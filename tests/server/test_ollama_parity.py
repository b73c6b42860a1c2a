"""Ollama's API, route by route, against a live server with scripted engines: every answer has the
fields Ollama's answer has (and the official `ollama` client's types read it), the error texts
clients match on are Ollama's, and the request fields Corral used to drop are honoured or refused.
What Corral still does differently is listed in README's "What Corral does not do (yet)"."""

from __future__ import annotations

import json

import httpx
import pytest
from ollama import _types as ollama_types

from corral.dsl import parse_modelfile
from corral.store.create import create_model
from tests.ggufs import TinyLlama, write_tiny_llama
from tests.specs import cpu_options

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
METRICS = {"total_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"}

# route, request, the keys its answer must have, the `ollama` client's type that must read it
SHAPES = [
    ("POST", "/api/generate", {"model": "smol", "prompt": "Hi", "stream": False},
     {"model", "created_at", "response", "done", "done_reason", "context"} | METRICS, ollama_types.GenerateResponse),
    ("POST", "/api/generate", {"model": "smol"},
     {"model", "created_at", "response", "done", "done_reason"}, ollama_types.GenerateResponse),
    ("POST", "/api/chat", CHAT,
     {"model", "created_at", "message", "done", "done_reason"} | METRICS, ollama_types.ChatResponse),
    ("POST", "/api/chat", {"model": "smol", "messages": []},
     {"model", "created_at", "message", "done", "done_reason"}, ollama_types.ChatResponse),
    ("POST", "/api/embed", {"model": "smol", "input": ["a", "b"]},
     {"model", "embeddings", "total_duration", "prompt_eval_count"}, ollama_types.EmbedResponse),
    ("POST", "/api/embeddings", {"model": "smol", "prompt": "a"}, {"embedding"}, ollama_types.EmbeddingsResponse),
    ("GET", "/api/tags", None, {"models"}, ollama_types.ListResponse),
    ("POST", "/api/show", {"model": "smol"},
     {"license", "modelfile", "parameters", "template", "system", "details", "model_info", "capabilities",
      "modified_at"}, ollama_types.ShowResponse),
    ("GET", "/api/ps", None, {"models"}, ollama_types.ProcessResponse),
    ("POST", "/api/copy", {"source": "smol", "destination": "smol-copy"}, set(), None),
    ("POST", "/api/create", {"model": "made", "from": "smol", "system": "Be brief.", "stream": False},
     {"status"}, ollama_types.ProgressResponse),
]


@pytest.mark.parametrize("method, path, body, keys, parsed_as", SHAPES,
                         ids=[f"{m} {p} {json.dumps(b)[:40]}" for m, p, b, *_ in SHAPES])
def test_every_answer_has_ollamas_fields_and_the_ollama_client_reads_it(fake, method, path, body, keys, parsed_as):
    fake.client.post("/api/generate", json={"model": "smol"})  # loaded, so /api/ps lists it
    r = fake.client.request(method, path, json=body)
    assert r.status_code == 200, r.text
    if not keys:
        assert r.content == b""  # copy and delete answer an empty 200, as Ollama does
        return
    answer = r.json()
    assert keys <= answer.keys()
    parsed_as.model_validate(answer)


def test_the_listings_entries_have_ollamas_fields(fake):
    fake.client.post("/api/generate", json={"model": "smol"})
    listed = fake.client.get("/api/tags").json()["models"]
    running = fake.client.get("/api/ps").json()["models"]
    details = {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}
    assert all({"name", "model", "modified_at", "size", "digest", "details", "capabilities"} <= m.keys() and
               details <= m["details"].keys() for m in listed)
    assert [m["name"] for m in running] == ["smol:latest"]
    assert {"name", "model", "size", "size_vram", "digest", "details", "expires_at",
            "context_length"} <= running[0].keys()
    assert running[0]["digest"] == next(m["digest"] for m in listed if m["name"] == "smol:latest")


# route, request, status, Ollama's error text (clients match on these)
ERRORS = [
    ("POST", "/api/generate", {"model": "nope", "prompt": "Hi"}, 404, "model 'nope' not found"),
    ("POST", "/api/chat", {**CHAT, "model": "nope"}, 404, "model 'nope' not found"),
    ("POST", "/api/embed", {"model": "nope", "input": "a"}, 404, "model 'nope' not found"),
    ("POST", "/api/show", {"model": "nope"}, 404, "model 'nope' not found"),
    ("POST", "/api/copy", {"source": "nope", "destination": "x"}, 404, "model 'nope' not found"),
    ("DELETE", "/api/delete", {"model": "nope"}, 404, "model 'nope' not found"),
    ("POST", "/api/chat", {"model": "", "messages": []}, 400, "model is required"),
    ("POST", "/api/generate", {"model": "smol", "prompt": "Hi", "think": True}, 400,
     '"smol:latest" does not support thinking'),
    ("POST", "/api/generate", {"model": "smol", "prompt": "Hi", "think": "hard"}, 400,
     'think: invalid think value: "hard" (must be "high", "medium", "low", "max", true, or false)'),
    ("POST", "/api/generate", {"model": "smol", "prompt": "Hi", "raw": True, "system": "x"}, 400,
     "raw mode does not support template, system, or context"),
    ("POST", "/api/generate", {"model": "smol", "prompt": "Hi", "top_logprobs": 21}, 400,
     "top_logprobs must be between 0 and 20"),
    ("POST", "/api/generate", {"model": "smol", "prompt": "Hi", "format": "yaml"}, 400,
     'format: invalid format: "yaml"; expected "json" or a valid JSON Schema object'),
    ("POST", "/api/generate", {"model": "smol", "prompt": "Hi", "keep_alive": "3600"}, 400,
     'keep_alive: time: missing unit in duration "3600"'),
    ("POST", "/api/embed", {"model": "smol", "input": 3}, 400, "input: invalid input type"),
    ("POST", "/api/create", {"model": "x"}, 400, "neither 'from' or 'files' was specified"),
    ("POST", "/api/create", {"model": "x", "from": "smol", "adapters": {"a": "sha256:" + "0" * 64,
                                                                         "b": "sha256:" + "1" * 64}},
     400, "only one adapter is currently supported"),
    ("POST", "/api/create", {"model": "x", "files": {"../m.gguf": "sha256:" + "0" * 64}}, 400,
     "file path must be relative"),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64, None, 404, None),
    ("HEAD", "/api/blobs/md5:0", None, 400, None),
    ("POST", "/api/ps", None, 405, "405 method not allowed"),
]


@pytest.mark.parametrize("method, path, body, status, error", ERRORS,
                         ids=[f"{m} {p} {json.dumps(b)[:50]}" for m, p, b, *_ in ERRORS])
def test_errors_have_ollamas_status_and_text(fake, method, path, body, status, error):
    r = fake.client.request(method, path, json=body)
    assert r.status_code == status, r.text
    if error is not None:
        assert r.json() == {"error": error}


def test_keep_alive_zero_with_nothing_to_say_unloads(fake):
    for path, body in (("/api/generate", {"model": "smol"}), ("/api/chat", {"model": "smol", "messages": []})):
        assert fake.client.post(path, json=body).json()["done_reason"] == "load"
        assert [m["name"] for m in fake.client.get("/api/ps").json()["models"]] == ["smol:latest"]
        assert fake.client.post(path, json={**body, "keep_alive": 0}).json()["done_reason"] == "unload"
        assert fake.client.get("/api/ps").json() == {"models": []}


@pytest.mark.parametrize("body, vectors", [
    ({"input": "a"}, [[0.6, 0.8, 0.0]]),
    ({"input": ["a", "b"], "dimensions": 1}, [[1.0], [1.0]]),
    ({"input": []}, []),
    ({"input": ""}, []),
])
def test_embed_normalizes_and_cuts_to_dimensions(fake, body, vectors):
    answer = fake.client.post("/api/embed", json={"model": "smol", **body}).json()
    assert answer["model"] == "smol"
    assert [pytest.approx(v) for v in vectors] == answer["embeddings"]


def test_legacy_embeddings_honour_load_options_as_embed_does(fake):
    r = fake.client.post("/api/embeddings", json={"model": "smol", "prompt": "a", "options": {"num_ctx": 128}})
    assert r.json() == {"embedding": [3.0, 4.0, 0.0]}  # not normalized, as Ollama's legacy route
    running = fake.client.get("/api/ps").json()["models"]
    assert [(m["name"], m["context_length"]) for m in running] == [("smol:latest", 128)]


def test_create_keeps_the_parser_and_show_gives_it_back(fake):
    r = fake.client.post("/api/create", json={"model": "made", "from": "smol", "parser": "think", "stream": False})
    assert r.json() == {"status": "success"}, r.text
    assert fake.client.post("/api/show", json={"model": "made"}).json()["parser"] == "think"
    assert "thinking" in fake.client.post("/api/show", json={"model": "made"}).json()["capabilities"]
    assert "parser" not in fake.client.post("/api/show", json={"model": "smol"}).json()  # none: left out


def test_create_checks_requires_as_a_definition_does(fake):
    r = fake.client.post("/api/create", json={"model": "made", "from": "smol", "requires": "soon", "stream": False})
    assert r.status_code == 400
    assert "requires must be a valid semantic version (e.g. 0.5.0), got 'soon'" in r.json()["error"]


def test_create_refuses_a_remote_model_instead_of_copying_the_local_one(fake):
    r = fake.client.post("/api/create", json={"model": "cloud", "from": "smol", "remote_host": "https://ollama.com:443",
                                              "stream": False})
    assert r.status_code == 400
    assert r.json() == {"error": "remote_host: Corral does not serve remote models; pull the model and create "
                                 "from it instead"}
    assert "cloud:latest" not in [m["name"] for m in fake.client.get("/api/tags").json()["models"]]


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/images/generations", "/api/experimental/web_search"])
def test_routes_corral_does_not_serve_answer_404(fake, path):
    assert fake.client.post(path, json={"model": "smol"}).status_code == 404


def test_show_lists_a_requests_options_among_the_parameters_as_ollama_does(fake):
    shown = fake.client.post("/api/show", json={"model": "smol", "options": {"temperature": 0.25, "stop": ["a", "b"]}})
    assert shown.json()["parameters"].splitlines() == ['stop                           "a"',
                                                        'stop                           "b"',
                                                        "temperature                    0.25"]
    plain = fake.client.post("/api/show", json={"model": "smol"}).json()["parameters"]
    assert plain == 'stop                           "<|im_end|>"'


@pytest.fixture
def embedder(fake, tmp_path) -> str:
    """An embedding model (a pooling type in its GGUF) in the fake server's store."""
    write_tiny_llama(tmp_path / "embed.gguf", TinyLlama(pooling=1, name="Tiny Embed"))
    definition = parse_modelfile("FROM ./embed.gguf\n", str(tmp_path / "embed.Modelfile")).definition
    create_model(fake.store, "embedder", definition, base_dir=tmp_path, options=cpu_options(num_parallel=1))
    return "embedder"


@pytest.mark.parametrize("path, body, route", [
    ("/api/chat", CHAT, "chat"),
    ("/api/generate", {"prompt": "Hi", "stream": False}, "generate"),
])
def test_an_embedding_model_refuses_to_generate_as_in_ollama(fake, embedder, path, body, route):
    r = fake.client.post(path, json={**body, "model": embedder})
    assert r.status_code == 400
    assert r.json() == {"error": f'"{embedder}:latest" does not support {route}'}
    assert fake.engines.requests == []  # refused before it reached an engine
    assert fake.client.post("/api/embed", json={"model": embedder, "input": "a"}).status_code == 200


def test_an_embedding_model_refuses_v1_chat_in_openais_shape(fake, embedder):
    r = fake.client.post("/v1/chat/completions", json={**CHAT, "model": embedder})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == f'"{embedder}:latest" does not support chat'


SMOL_PROMPT = ("<|im_start|>system\nYou are Smol.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
               "<|im_start|>assistant\n")


@pytest.mark.parametrize("path, body, empty", [
    ("/api/generate", {"model": "smol", "prompt": "Hi"}, {"response": ""}),
    ("/api/chat", {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]},
     {"message": {"role": "", "content": ""}}),
])
def test_debug_render_only_answers_the_prompt_without_generating(fake, path, body, empty):
    r = fake.client.post(path, json={**body, "_debug_render_only": True})
    answer = r.json()
    assert r.status_code == 200 and answer.pop("created_at")
    assert answer == {"model": "smol", **empty, "done": False,
                      "_debug_info": {"rendered_template": SMOL_PROMPT, "image_count": 0}}
    assert fake.engines.requests == [] and fake.engines.started == []  # nothing loaded, nothing generated
    fake.client.post(path, json={**body, "stream": False})
    assert [q.prompt for q in fake.engines.requests] == [SMOL_PROMPT]  # what a real request sends


@pytest.fixture
def smol_server(tmp_path, smollm2_gguf):
    """A live server over the real engine, with SmolLM2 as `smol`."""
    from corral.config.settings import Settings
    from corral.server.app import create_app
    from corral.store.store import Store
    from tests.server.live import LiveServer

    definition = parse_modelfile(f"FROM {smollm2_gguf}\nPARAMETER num_ctx 1024\n", str(tmp_path / "M")).definition
    create_model(Store(tmp_path / "models"), "smol", definition, base_dir=tmp_path, options=cpu_options(num_parallel=1))
    app = create_app(Settings(models=tmp_path / "models", num_parallel=1), name="corral_parity")
    with LiveServer(app) as live:
        yield live


@pytest.mark.model
def test_the_ollama_client_reads_every_answer_of_the_real_model(smol_server):
    import ollama

    client = ollama.Client(host=smol_server.url, timeout=300)
    greedy = {"temperature": 0, "num_predict": 5}
    generated = client.generate(model="smol", prompt="Hi", options=greedy)
    assert generated.done and generated.done_reason in ("stop", "length") and generated.context
    assert generated.eval_count and generated.prompt_eval_count and generated.total_duration > 0
    assert generated.load_duration > 0  # this request loaded the model
    streamed = list(client.chat(model="smol", messages=[{"role": "user", "content": "Hi"}], options=greedy,
                                stream=True))
    assert [c.done for c in streamed] == [False] * (len(streamed) - 1) + [True]
    assert streamed[-1].done_reason in ("stop", "length") and streamed[-1].eval_count >= 1
    embedded = client.embed(model="smol", input=["a", "b"], dimensions=4)
    assert [len(v) for v in embedded.embeddings] == [4, 4]
    assert sum(x * x for x in embedded.embeddings[0]) == pytest.approx(1.0)
    shown = client.show("smol")
    assert shown.capabilities == ["completion"] and shown.modelinfo["general.architecture"] == "llama"
    running = client.ps().models
    assert [m.model for m in running] == ["smol:latest"] and running[0].context_length == 1024
    rendered = httpx.post(smol_server.url + "/api/generate", timeout=60,
                          json={"model": "smol", "prompt": "Hi", "_debug_render_only": True}).json()
    assert rendered["_debug_info"]["rendered_template"].endswith("<|im_start|>user\nHi<|im_end|>\n"
                                                                  "<|im_start|>assistant\n")
    assert client.generate(model="smol", keep_alive=0).done_reason == "unload"
    assert client.ps().models == []


@pytest.mark.parametrize("later", [
    ("/api/generate", {"model": "smol", "prompt": "Hi", "stream": False}),
    ("/api/embed", {"model": "smol", "input": "a"}),
    ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}),
])
def test_a_request_without_keep_alive_leaves_the_models_as_it_is(fake, later):
    fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False, "keep_alive": -1})
    def year() -> int:  # of the model's expiry; kept forever, it is far in the future
        return int(fake.client.get("/api/ps").json()["models"][0]["expires_at"][:4])

    assert year() > 2100
    path, body = later
    assert fake.client.post(path, json=body).status_code == 200
    assert year() > 2100
    fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False, "keep_alive": "1m"})
    assert year() < 2100  # a request that gives one changes it


def test_show_gives_a_vision_models_projector_metadata_as_projector_info(fake, tmp_path):
    from tests.vision import write_projector

    write_tiny_llama(tmp_path / "seer.gguf")
    write_projector(tmp_path / "mmproj.gguf", text_embd=TinyLlama().embd)
    definition = parse_modelfile("FROM ./seer.gguf\nPROJECTOR ./mmproj.gguf\n", str(tmp_path / "M")).definition
    create_model(fake.store, "seer", definition, base_dir=tmp_path, options=cpu_options(num_parallel=1))
    shown = fake.client.post("/api/show", json={"model": "seer"}).json()
    assert "vision" in shown["capabilities"]
    projector = shown["projector_info"]
    assert (projector["general.architecture"], projector["clip.projector_type"]) == ("clip", "mlp")
    assert projector["clip.vision.image_size"] == 64
    assert "projector_info" not in fake.client.post("/api/show", json={"model": "smol"}).json()
