"""The engine on the real SmolLM2: continuous batching in a worker process.

Greedy sampling wherever exact text matters; short generations to keep the module quick on two
cores. No test asserts a duration: "does not stall" is checked by counting the chunks other
requests receive meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any, Coroutine, TypeVar

import pytest

from corral.engine.process import Engine
from corral.engine.errors import ContextOverflowError, EngineError, EngineInputError, ModelLoadError, WorkerCrashedError
from corral.engine.requests import EmbedRequest, Final, GenerateRequest, Sampling
from tests.engine.streams import collect
from tests.specs import chatml_prompt, runtime_spec

T = TypeVar("T")

PARIS = chatml_prompt("What is the capital of France?")
QUESTIONS = ["What is the capital of France?", "Name three colors.", "What is 2+2?", "Tell me a joke.",
             "Who wrote Hamlet?", "What is water made of?", "Say hello in Spanish.", "What is the largest planet?"]
# A grammar the model can never finish, so a stream runs for as long as a test needs it.
ENDLESS = 'root ::= "ab " root'
JSON_GBNF = r'''root ::= object
value ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
'''


def greedy(num_predict: int) -> Sampling:
    return Sampling(temperature=0.0, num_predict=num_predict)


def endless(rid: str) -> GenerateRequest:
    """A request that streams until it is cancelled (its grammar never lets it finish)."""
    return GenerateRequest(rid, chatml_prompt("Say something."), greedy(-1), grammar=ENDLESS)


def two_endless_streams(engine: Engine, events: list[str]) -> tuple[list[asyncio.Task], asyncio.Event]:
    """Streams "a" and "b", each appending its name to `events` per chunk; the event is set once
    both have had two chunks."""
    both_streaming = asyncio.Event()

    async def stream(rid: str) -> None:
        async for _ in engine.generate(endless(rid)):
            events.append(rid)
            if events.count("a") >= 2 and events.count("b") >= 2:
                both_streaming.set()

    return [asyncio.create_task(stream(rid)) for rid in ("a", "b")], both_streaming


class LoopThread:
    """One event loop for the whole module, so engines outlive single tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 240) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> LoopThread:
    runner = LoopThread()
    yield runner
    runner.close()


def _engine(loop: LoopThread, weights: Path, stall_timeout: float = 120.0, **options: Any) -> Engine:
    engine = Engine(runtime_spec(weights, **options), stall_timeout=stall_timeout)
    loop.run(engine.start())
    return engine


@pytest.fixture(scope="module")
def engine(loop: LoopThread, smollm2_gguf: Path) -> Engine:
    """Eight slots; a small batch so that a long prompt takes many steps to evaluate."""
    engine = _engine(loop, smollm2_gguf, num_ctx=1024, num_batch=64, num_parallel=8)
    yield engine
    loop.run(engine.close())


@pytest.fixture(scope="module")
def one_slot(loop: LoopThread, smollm2_gguf: Path) -> Engine:
    """One slot and a long context: an endless stream there would run for minutes."""
    engine = _engine(loop, smollm2_gguf, num_ctx=4096, num_batch=64, num_parallel=1)
    yield engine
    loop.run(engine.close())


def test_capital_of_france(loop: LoopThread, engine: Engine) -> None:
    text, final = loop.run(collect(engine, GenerateRequest("paris", PARIS, greedy(24))))
    assert "Paris" in text
    assert final.done_reason == "stop"
    assert final.eval_count >= 1
    n_prompt = len(loop.run(engine.tokenize(PARIS)))
    assert final.prompt_eval_count + final.prompt_tokens_cached == n_prompt
    assert engine.in_flight == 0


def test_a_repeated_prompt_reuses_the_cached_prefix(loop: LoopThread, engine: Engine) -> None:
    n_prompt = len(loop.run(engine.tokenize(PARIS)))
    first_text, _ = loop.run(collect(engine, GenerateRequest("first", PARIS, greedy(24))))
    again_text, again = loop.run(collect(engine, GenerateRequest("again", PARIS, greedy(24))))
    # Everything but the last prompt token, which must be decoded again for its logits.
    assert (again.prompt_tokens_cached, again.prompt_eval_count) == (n_prompt - 1, 1)
    assert again_text == first_text
    follow_up = PARIS + first_text + "<|im_end|>\n" + chatml_prompt("And of Italy?")
    _, follow = loop.run(collect(engine, GenerateRequest("follow-up", follow_up, greedy(8))))
    assert follow.prompt_tokens_cached >= n_prompt


def test_length_limit(loop: LoopThread, engine: Engine) -> None:
    _, final = loop.run(collect(engine, GenerateRequest("four", chatml_prompt("Tell me a long story."), greedy(4))))
    assert (final.done_reason, final.eval_count) == ("length", 4)


def test_greedy_output_is_the_same_alone_and_among_eight(loop: LoopThread, engine: Engine) -> None:
    def request(i: int, tag: str) -> GenerateRequest:
        return GenerateRequest(f"{tag}-{i}", chatml_prompt(QUESTIONS[i]), greedy(24))

    async def alone() -> list[str]:
        return [(await collect(engine, request(i, "alone")))[0] for i in range(len(QUESTIONS))]

    async def together() -> list[str]:
        results = await asyncio.gather(*(collect(engine, request(i, "together")) for i in range(len(QUESTIONS))))
        return [text for text, _ in results]

    assert loop.run(together()) == loop.run(alone())


def test_a_request_is_admitted_while_others_stream(loop: LoopThread, engine: Engine) -> None:
    async def scenario() -> tuple[str, list[str]]:
        events: list[str] = []

        streams, both_streaming = two_endless_streams(engine, events)
        await both_streaming.wait()
        text, _ = await collect(engine, GenerateRequest("late", PARIS, greedy(24)))
        finished = [t.done() for t in streams]
        for t in streams:
            t.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        return text, [str(f) for f in finished]

    text, finished = loop.run(scenario())
    assert "Paris" in text
    assert finished == ["False", "False"]  # it ran beside the endless streams, not after them


def test_a_long_prompt_does_not_stall_the_streams(loop: LoopThread, engine: Engine) -> None:
    long_prompt = chatml_prompt("Repeat: " + " ".join(["apple"] * 850))

    async def scenario() -> list[str]:
        assert 800 < len(await engine.tokenize(long_prompt)) < 1000
        events: list[str] = []

        streams, both_streaming = two_endless_streams(engine, events)
        await both_streaming.wait()
        events.append("long submitted")
        async for _ in engine.generate(GenerateRequest("long", long_prompt, greedy(1))):
            events.append("long answered")
            break
        for t in streams:
            t.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        return events[events.index("long submitted") + 1: events.index("long answered")]

    during_prefill = loop.run(scenario())
    # 64-token batches: the ~900-token prompt takes over a dozen steps, each also serving a and b.
    assert during_prefill.count("a") > 0 and during_prefill.count("b") > 0
    assert engine.in_flight == 0


def test_stops_and_grammars_stay_in_their_slots(loop: LoopThread, engine: Engine) -> None:
    async def scenario() -> list[tuple[str, Final]]:
        return await asyncio.gather(
            collect(engine, GenerateRequest("plain", PARIS, greedy(24))),
            collect(engine, GenerateRequest("stop-paris", PARIS, greedy(24), stop=(" Paris",))),
            collect(engine, GenerateRequest("stop-capital", PARIS, greedy(24), stop=("capital",))),
            collect(engine, GenerateRequest("yes-no", PARIS, greedy(24), grammar='root ::= "yes" | "no"')),
            collect(engine, GenerateRequest("plain-2", PARIS, greedy(24))),
        )

    (plain, plain_final), (cut, cut_final), (capital, _), (yes_no, _), (plain2, _) = loop.run(scenario())
    assert "Paris" in plain and plain2 == plain
    assert plain.startswith(cut + " Paris") and cut_final.done_reason == "stop"
    assert plain.startswith(capital + "capital") and "capital" not in capital
    assert yes_no in ("yes", "no")
    assert plain_final.done_reason == "stop"


def test_json_grammar_output_parses(loop: LoopThread, engine: Engine) -> None:
    prompt = chatml_prompt("Describe a cat as a JSON object with the keys name and age.")
    text, final = loop.run(collect(engine, GenerateRequest("json", prompt, greedy(120), grammar=JSON_GBNF)))
    assert final.done_reason == "stop"
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("req, error, words", [
    (GenerateRequest("bad-grammar", PARIS, greedy(4), grammar="root ::= foo("), EngineInputError,
     ["invalid grammar", "expecting ')'"]),
    (GenerateRequest("no-root", PARIS, greedy(4), grammar='answer ::= "x"'), EngineInputError,
     ["invalid grammar", "root"]),
    (GenerateRequest("empty", "", greedy(4)), EngineInputError, ["empty"]),
    (GenerateRequest("too-long", chatml_prompt(" ".join(["apple"] * 1500)), greedy(4)), ContextOverflowError,
     ["context window of 1024 tokens"]),
])
def test_requests_that_cannot_run(loop: LoopThread, engine: Engine, req: GenerateRequest,
                                  error: type[Exception], words: list[str]) -> None:
    with pytest.raises(error) as caught:
        loop.run(collect(engine, req))
    for word in words:
        assert word in str(caught.value)
    assert engine.in_flight == 0


def test_overflow_message_names_both_numbers(loop: LoopThread, engine: Engine) -> None:
    prompt = chatml_prompt(" ".join(["apple"] * 1500))
    n_tokens = len(loop.run(engine.tokenize(prompt)))
    with pytest.raises(ContextOverflowError) as caught:
        loop.run(collect(engine, GenerateRequest("overflow", prompt, greedy(4))))
    assert str(caught.value) == f"the prompt is {n_tokens} tokens, more than the context window of 1024 tokens (num_ctx)"


def test_duplicate_request_id_is_refused(loop: LoopThread, engine: Engine) -> None:
    async def scenario() -> None:
        first = engine.generate(endless("same"))
        await first.__anext__()
        try:
            with pytest.raises(EngineInputError, match="already in flight"):
                await collect(engine, GenerateRequest("same", PARIS, greedy(4)))
        finally:
            await first.aclose()

    loop.run(scenario())
    assert engine.in_flight == 0


def test_embeddings(loop: LoopThread, engine: Engine) -> None:
    inputs = ("hello world", "the cat sat on the mat", "hello world")
    result = loop.run(engine.embed(EmbedRequest("emb", inputs)))
    assert len(result.vectors) == 3 and {len(v) for v in result.vectors} == {576}
    for vector in result.vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-5)
    assert result.vectors[0] == pytest.approx(result.vectors[2], abs=1e-5)
    assert result.vectors[0] != pytest.approx(result.vectors[1], abs=1e-2)
    assert result.prompt_eval_count > 0

    raw = loop.run(engine.embed(EmbedRequest("raw", ("hello world",), normalize=False)))
    assert not math.isclose(math.sqrt(sum(x * x for x in raw.vectors[0])), 1.0, rel_tol=1e-3)
    assert loop.run(engine.embed(EmbedRequest("none", ()))).vectors == ()


def test_embedding_input_longer_than_the_context(loop: LoopThread, engine: Engine) -> None:
    long_input = " ".join(["apple"] * 1500)
    with pytest.raises(ContextOverflowError, match="input 1 is .* tokens, more than the context window of 1024"):
        loop.run(engine.embed(EmbedRequest("long", ("short", long_input), truncate=False)))
    truncated = loop.run(engine.embed(EmbedRequest("cut", ("short", long_input), truncate=True)))
    assert len(truncated.vectors) == 2 and truncated.prompt_eval_count <= 1024 + 10


def test_cancellation_frees_the_slot_at_once(loop: LoopThread, one_slot: Engine) -> None:
    async def close_early() -> int:
        stream = one_slot.generate(endless("endless"))
        chunks = 0
        async for _ in stream:
            chunks += 1
            if chunks == 3:
                break
        await stream.aclose()
        return one_slot.in_flight

    async def cancel_the_consumer() -> int:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in one_slot.generate(endless("endless-2")):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return one_slot.in_flight

    for scenario in (close_early, cancel_the_consumer):
        assert loop.run(scenario()) == 0
        # One slot: this can only run because the endless stream left it. Left running, the
        # endless stream would fill its 4096-token context first (minutes on a CPU).
        text, final = loop.run(asyncio.wait_for(collect(one_slot, GenerateRequest("next", PARIS, greedy(24))), 120))
        assert "Paris" in text and final.done_reason == "stop"


def test_worker_crash_fails_in_flight_requests_and_restarts(loop: LoopThread, smollm2_gguf: Path) -> None:
    engine = _engine(loop, smollm2_gguf, name="crashy", num_ctx=512, num_parallel=2)
    try:
        async def scenario() -> None:
            stream = engine.generate(endless("doomed"))
            await stream.__anext__()
            os.kill(engine.pid, signal.SIGKILL)
            with pytest.raises(WorkerCrashedError, match="^the model's worker stopped: crashy exited with signal SIGKILL$"):
                async for _ in stream:
                    pass
            assert engine.in_flight == 0

        old_pid = engine.pid
        loop.run(scenario())
        assert engine.crashes == 1
        text, _ = loop.run(collect(engine, GenerateRequest("reborn", PARIS, greedy(24))))
        assert "Paris" in text
        assert engine.alive and engine.pid != old_pid

        async def close_under_a_stream() -> None:
            stream = engine.generate(endless("cut-off"))
            await stream.__anext__()
            await engine.close()
            with pytest.raises(EngineError, match="the engine for crashy was closed"):
                async for _ in stream:  # chunks that arrived before the close come first
                    pass
            with pytest.raises(EngineError, match="the engine for crashy is closed"):
                await collect(engine, GenerateRequest("too-late", PARIS, greedy(4)))

        loop.run(close_under_a_stream())
    finally:
        loop.run(engine.close())
    assert not engine.alive and engine.in_flight == 0
    assert engine.crashes == 1  # a close is not a crash


def test_a_hung_worker_is_killed_after_the_stall_timeout(loop: LoopThread, smollm2_gguf: Path) -> None:
    # SIGSTOP freezes every thread of the worker, its heartbeat too: from outside, a wedged process.
    engine = _engine(loop, smollm2_gguf, stall_timeout=2.0, name="frozen", num_ctx=512, num_parallel=1)
    try:
        async def scenario() -> None:
            stream = engine.generate(endless("stuck"))
            await stream.__anext__()
            os.kill(engine.pid, signal.SIGSTOP)
            with pytest.raises(WorkerCrashedError,
                               match="^the model's worker stopped: frozen made no progress for 2 s and was killed$"):
                async for _ in stream:
                    pass

        loop.run(asyncio.wait_for(scenario(), 60))
        assert engine.crashes == 1 and not engine.alive
        text, _ = loop.run(collect(engine, GenerateRequest("thawed", PARIS, greedy(24))))
        assert "Paris" in text
    finally:
        loop.run(engine.close())


def test_a_long_prompt_evaluation_beats_past_a_short_stall_timeout(loop: LoopThread, smollm2_gguf: Path) -> None:
    # One decode of a whole 1500-token prompt blocks the worker's main thread far longer than
    # 0.5 s on a CPU; its heartbeat thread keeps it alive.
    engine = _engine(loop, smollm2_gguf, stall_timeout=0.5, name="slow", num_ctx=2048, num_batch=2048,
                     num_parallel=1)
    try:
        long_prompt = chatml_prompt("Repeat after me: " + "the quick brown fox jumps over the lazy dog. " * 150)
        _, final = loop.run(collect(engine, GenerateRequest("long", long_prompt, greedy(4))))
        assert final.prompt_eval_count > 1500
        assert engine.crashes == 0
    finally:
        loop.run(engine.close())


def test_a_file_that_is_not_a_model_fails_to_load(loop: LoopThread, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all" * 100)
    engine = Engine(runtime_spec(bogus))
    with pytest.raises(ModelLoadError, match="invalid magic"):
        loop.run(engine.start())
    assert not engine.alive


def _write_lora(path: Path, scale: float) -> Path:
    """A rank-8 LoRA on every attention query of SmolLM2; scale 0 leaves the model as it was."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    rng = np.random.default_rng(0)
    for layer in range(30):  # numpy shapes are ggml's reversed: A is [576, r], B is [r, 576]
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_a", (rng.standard_normal((8, 576)) * 0.1).astype(np.float32))
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_b", (rng.standard_normal((576, 8)) * scale).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_lora_adapters_apply_to_the_context(loop: LoopThread, smollm2_gguf: Path, tmp_path: Path) -> None:
    async def answer(adapters: tuple[Path, ...]) -> str:
        engine = Engine(runtime_spec(smollm2_gguf, num_ctx=256, num_parallel=1, adapters=adapters))
        try:
            return (await collect(engine, GenerateRequest("lora", PARIS, greedy(16))))[0]
        finally:
            await engine.close()

    plain = loop.run(answer(()))
    assert loop.run(answer((_write_lora(tmp_path / "zero.gguf", 0.0),))) == plain
    assert loop.run(answer((_write_lora(tmp_path / "strong.gguf", 1.0),))) != plain


def test_an_adapter_that_does_not_fit_fails_the_load(loop: LoopThread, smollm2_gguf: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "not-an-adapter.gguf"
    bogus.write_bytes(b"nope" * 64)
    engine = Engine(runtime_spec(smollm2_gguf, num_ctx=256, num_parallel=1, adapters=(bogus,)))
    with pytest.raises(ModelLoadError, match="could not load the adapter .*not-an-adapter.gguf"):
        loop.run(engine.start())
