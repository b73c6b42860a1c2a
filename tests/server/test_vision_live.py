"""Vision on the real server: SmolLM2 with a synthetic projector (tests/vision.py), through the
official `ollama` and `openai` clients.

The projector's weights are random, so what the model says about an image is not checked: only
that the image's tokens reach the model (the prompt grows by exactly the projector's tokens per
image) and that the answer streams. A model without a projector refuses images with a 400.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from corral.config.settings import Settings
from corral.dsl import parse_modelfile
from corral.server.app import create_app
from corral.store.create import create_model
from corral.store.manifest import MediaType
from corral.store.store import Store
from tests.server.live import LiveServer
from tests.specs import cpu_options
from tests.vision import IMAGE_TOKENS, png_bytes, write_projector

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "num_predict": 8}
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, smollm2_gguf) -> Path:
    root = tmp_path_factory.mktemp("vision")
    write_projector(root / "mmproj.gguf")
    store = Store(root / "models")
    for name, text in (("eyes", f"FROM {smollm2_gguf}\nPROJECTOR ./mmproj.gguf\nPARAMETER num_ctx 1024\n"),
                       ("smol", f"FROM {smollm2_gguf}\nPARAMETER num_ctx 1024\n")):
        definition = parse_modelfile(text, str(root / "Modelfile")).definition
        create_model(store, name, definition, base_dir=root, options=cpu_options(num_parallel=2))
    return root / "models"


@pytest.fixture(scope="module")
def server(store_root):
    settings = Settings(models=store_root, num_parallel=2, keep_alive="-1")
    app = create_app(settings, name="corral_vision")
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def native(server):
    return ollama.Client(host=server.url, timeout=300)


# Each test asks without images first and ends with keep_alive 0, so that the first request of the
# next test finds the model freshly loaded, with nothing cached to share: every prompt token counts.


def test_an_image_reaches_the_model_and_the_answer_streams(native):
    text_only = native.chat(model="eyes", messages=[{"role": "user", "content": QUESTION}], options=GREEDY)
    parts = list(native.chat(model="eyes", stream=True, options=GREEDY, keep_alive=0,
                             messages=[{"role": "user", "content": QUESTION, "images": [png_bytes()]}]))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert "".join(p.message.content for p in parts).strip()
    assert parts[-1].prompt_eval_count == text_only.prompt_eval_count + IMAGE_TOKENS


def test_two_images_in_generate(native, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes())
    plain = native.generate(model="eyes", prompt=QUESTION, options=GREEDY)
    seen = native.generate(model="eyes", prompt=QUESTION, images=[path, png_bytes(rgb=(0, 0, 255))], options=GREEDY,
                           keep_alive=0)
    assert seen.done and seen.response.strip()
    assert seen.prompt_eval_count == plain.prompt_eval_count + 2 * IMAGE_TOKENS


def test_openai_image_url_streams(server, native):
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300) as client:
        chunks = list(client.chat.completions.create(
            model="eyes", temperature=0, max_tokens=8, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                                    {"type": "image_url", "image_url": {"url": url}}]}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage.prompt_tokens > IMAGE_TOKENS
    native.generate(model="eyes", keep_alive=0)  # unload: the next test starts with nothing cached


def test_responses_and_messages_carry_images(server):
    data = base64.b64encode(png_bytes()).decode()
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300) as client:
        plain = client.responses.create(model="eyes", input=QUESTION, max_output_tokens=8, temperature=0)
        seen = client.responses.create(model="eyes", max_output_tokens=8, temperature=0, input=[
            {"role": "user", "content": [{"type": "input_text", "text": QUESTION},
                                         {"type": "input_image", "image_url": "data:image/png;base64," + data}]}])
    assert seen.output_text.strip() and seen.usage.input_tokens == plain.usage.input_tokens + IMAGE_TOKENS
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=300) as client:
        with client.messages.stream(model="eyes", max_tokens=8, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
                {"type": "text", "text": QUESTION}]}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text.strip() and final.usage.input_tokens > IMAGE_TOKENS


def test_a_model_without_a_projector_refuses_images(native):
    with pytest.raises(ollama.ResponseError) as e:
        native.chat(model="smol", messages=[{"role": "user", "content": QUESTION, "images": [png_bytes()]}])
    assert e.value.status_code == 400 and '"smol:latest" does not support images' in e.value.error


def test_a_broken_image_is_a_clear_error(server):
    body = {"model": "eyes", "stream": False, "messages": [{"role": "user", "content": QUESTION,
                                                            "images": [base64.b64encode(b"not a picture").decode()]}]}
    reply = httpx.post(server.url + "/api/chat", json=body, timeout=300)
    assert reply.status_code == 400 and "image 1 could not be decoded" in reply.json()["error"]
    last = {"model": "eyes", "stream": False, "raw": True, "prompt": "", "images": [base64.b64encode(png_bytes()).decode()]}
    reply = httpx.post(server.url + "/api/generate", json=last, timeout=300)
    assert reply.status_code == 400 and "the prompt ends with an image" in reply.json()["error"]


def test_the_projector_is_a_layer_and_shows_as_vision(native, store_root):
    assert "vision" in native.show("eyes").capabilities
    assert "vision" not in native.show("smol").capabilities
    manifest = json.loads(next((store_root / "manifests").rglob("eyes/latest")).read_text())
    assert [layer["mediaType"] for layer in manifest["layers"]].count(MediaType.PROJECTOR) == 1
