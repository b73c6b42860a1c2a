"""Load-time options in a request (num_ctx, num_batch, ...): a model loaded with them runs beside
the definition's own as a variant, through the real scheduler over scripted engines. The tiny
model is trained on 512 tokens, which is also the num_ctx its definition gets."""

from __future__ import annotations

import threading

import pytest

from tests.waiting import until

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "stream": False}


def contexts(fake) -> list[tuple[str, int]]:
    return sorted((m["name"], m["context_length"]) for m in fake.client.get("/api/ps").json()["models"])


def chat(fake, **options):
    r = fake.client.post("/api/chat", json={**CHAT, "options": options})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("options, loads, running", [
    ({}, 1, [("smol:latest", 512)]),
    ({"temperature": 0}, 1, [("smol:latest", 512)]),  # sampling options never reload
    ({"num_ctx": 512}, 1, [("smol:latest", 512)]),  # what it is loaded with already
    ({"num_ctx": 8192}, 1, [("smol:latest", 512)]),  # lowered to the 512 it was trained on: the same
    ({"num_gpu": -1}, 1, [("smol:latest", 512)]),  # "as many layers as fit" matches any
    ({"num_gpu": 99}, 1, [("smol:latest", 512)]),  # planned the same on a machine without GPUs
    ({"num_ctx": 256}, 2, [("smol:latest", 256), ("smol:latest", 512)]),
    ({"num_batch": 64}, 2, [("smol:latest", 512), ("smol:latest", 512)]),
])
def test_a_request_with_other_load_options_loads_a_variant_beside_the_model(fake, options, loads, running):
    chat(fake)
    chat(fake, **options)
    assert len(fake.engines.started) == loads
    assert contexts(fake) == running
    assert fake.engines.requests[-1].sampling.temperature == options.get("temperature", 0.8)


def test_the_variant_is_reused_by_requests_with_the_same_options(fake):
    for _ in range(3):
        chat(fake, num_ctx=256)
    assert fake.engines.started == ["smol:latest"]
    assert contexts(fake) == [("smol:latest", 256)]


def test_a_running_stream_on_the_model_is_not_disturbed_by_a_variant(fake):
    fake.engines.endless = True
    release = threading.Event()
    lines: list[str] = []

    def stream() -> None:
        with fake.client.stream("POST", "/api/chat", json={**CHAT, "stream": True}) as r:
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == len(fake.engines.pieces):
                    release.wait(60)  # then leave, which ends the endless stream
                    return

    thread = threading.Thread(target=stream)
    thread.start()
    until(lambda: len(lines) == len(fake.engines.pieces))
    fake.engines.endless = False
    assert chat(fake, num_ctx=256)["done"]
    assert fake.in_flight() == 1 and fake.engines.closed_early == 0  # still streaming on the 512 one
    assert contexts(fake) == [("smol:latest", 256), ("smol:latest", 512)]
    release.set()
    thread.join(30)
    until(lambda: fake.in_flight() == 0)


def test_unload_stops_every_variant(fake):
    chat(fake)
    chat(fake, num_ctx=256)
    r = fake.client.post("/api/generate", json={"model": "smol", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    until(lambda: contexts(fake) == [])


def test_options_on_embed_load_a_variant_too(fake):
    r = fake.client.post("/api/embed", json={"model": "smol", "input": "hi", "options": {"num_ctx": 128}})
    assert r.status_code == 200
    assert contexts(fake) == [("smol:latest", 128)]


def test_a_variant_the_machine_cannot_hold_is_refused_with_the_plans_numbers(fake):
    from dataclasses import replace

    from corral.compiler.variant import VariantError, load_variant

    spec = fake.models.spec("smol")
    small = replace(fake.models.options, memory_bytes=1024)
    with pytest.raises(VariantError) as caught:
        load_variant(spec, {"num_ctx": 256}, small)
    assert caught.value.message.startswith("smol:latest with num_ctx 256 needs ")
    assert caught.value.message.endswith(" GiB, more than the 0.0 GiB of memory available")
    assert load_variant(spec, {"num_ctx": 9999}, small) == (
        spec, ["num_ctx 9999 is lowered to 512, the context length smol:latest was trained on"])

