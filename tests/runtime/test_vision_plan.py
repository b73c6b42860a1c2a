"""Planning a request with images: where the media markers go in the prompt, the images the
engine gets, and the 400s (no projector; not base64)."""

from __future__ import annotations

import base64

import pytest

from corral.compiler.spec import WeightsRef
from corral.engine.requests import MEDIA_MARKER
from corral.runtime.errors import InvalidRequestError, UnsupportedRequestError
from corral.runtime.inference import ChatInput, GenerateInput, plan_chat, plan_generate
from tests.ggufs import write_tiny_llama
from tests.specs import runtime_spec

PNG = b"\x89PNG fake bytes"
B64 = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("vision") / "tiny.gguf")


@pytest.fixture
def eyes(weights):
    projector = WeightsRef(path="/models/mmproj.gguf", size=1)
    return runtime_spec(weights, name="eyes:latest").model_copy(update={"projector": projector})


def test_each_messages_images_go_before_its_text(eyes):
    messages = [{"role": "user", "content": "first", "images": [B64, "data:image/png;base64," + B64]},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second", "images": [B64]}]
    plan = plan_chat(eyes, ChatInput(messages=messages))
    assert plan.images == (PNG, PNG, PNG)
    assert f"user\n{MEDIA_MARKER}{MEDIA_MARKER}first<|im_end|>" in plan.prompt
    assert f"user\n{MEDIA_MARKER}second<|im_end|>" in plan.prompt
    assert plan.history == messages  # truncation drops messages with their images, and re-renders
    shorter = plan.rebuild(messages[2:])
    assert shorter.images == (PNG,) and shorter.prompt.count(MEDIA_MARKER) == 1


def test_a_generate_requests_images_go_before_its_prompt(eyes):
    plan = plan_generate(eyes, GenerateInput(prompt="what is it?", images=[B64]))
    assert plan.images == (PNG,) and f"user\n{MEDIA_MARKER}what is it?<|im_end|>" in plan.prompt
    assert plan_generate(eyes, GenerateInput(prompt="hi")).images == ()


@pytest.mark.parametrize("plan", [
    lambda spec: plan_chat(spec, ChatInput(messages=[{"role": "user", "content": "x", "images": [B64]}])),
    lambda spec: plan_generate(spec, GenerateInput(prompt="x", images=[B64])),
])
def test_a_model_without_a_projector_refuses_images(plan, weights):
    with pytest.raises(UnsupportedRequestError, match='^"smol:latest" does not support images'):
        plan(runtime_spec(weights, name="smol:latest"))


def test_an_image_that_is_not_base64_names_its_place(eyes):
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.images: image 2 is not valid base64"):
        plan_chat(eyes, ChatInput(messages=[{"role": "user", "content": "x", "images": [B64, "not base64!"]}]))
