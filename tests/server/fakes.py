"""Test doubles at the server's process boundary: scripted engines, and a dependency that fails.

The server tests run the real store, model source and scheduler; only the engine (the worker
process around llama.cpp) is replaced. `ScriptedEngines` is the scheduler's engine factory: each
engine it makes answers every generation with the same scripted pieces and statistics, and they
all record what they were asked, so a test's expected values come from the script it set.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from corral.compiler.spec import RuntimeSpec
from corral.engine.requests import Chunk, EmbedRequest, Embeddings, Final, GenerateRequest, TokenLogprob, TopLogprob


@dataclass
class ScriptedEngines:
    """The engine factory, the script every engine follows, and the record of what they did.

    A generation yields `pieces` (one token each) and a Final with `done_reason`, the prompt
    statistics below and `eval_count = len(pieces)`; with `endless` it then waits until it is
    closed. `fail_after` is raised after the first piece. A request for logprobs gets `logprob(i)`
    for piece i, its top alternatives being the piece and then "alt1", "alt2"... each 1.0 lower;
    `stop_sequence` is the Final's. With `honour_stops`, a piece that is one of the request's stop
    strings ends it there, as the real engine's stop matching does (the Final names it and counts
    the pieces before it); a request with a grammar gets `grammar_pieces` when set. An embedding is `vector` per input
    (scaled to unit length when the request asks for normalized vectors), `tokens_per_input` each.
    """

    pieces: list[str] = field(default_factory=lambda: ["Hello", ",", " world"])
    done_reason: str = "stop"
    prompt_eval_count: int = 7
    prompt_eval_duration: int = 1_000
    eval_duration: int = 2_000
    load_duration_ns: int = 4_000_000
    vector: tuple[float, ...] = (3.0, 4.0, 0.0)
    tokens_per_input: int = 2
    endless: bool = False
    fail_after: Exception | None = None
    stop_sequence: str | None = None
    honour_stops: bool = False
    grammar_pieces: list[str] | None = None

    requests: list[GenerateRequest] = field(default_factory=list)
    embedded: list[EmbedRequest] = field(default_factory=list)
    tokenized: list[str] = field(default_factory=list)  # texts the runtime asked an engine to tokenize
    started: list[str] = field(default_factory=list)  # model names, one per load
    closed: list[str] = field(default_factory=list)  # model names, one per unload
    finished: int = 0
    closed_early: int = 0
    stream_closed: threading.Event = field(default_factory=threading.Event)  # a stream ended before its Final

    def __call__(self, spec: RuntimeSpec) -> "ScriptedEngine":
        return ScriptedEngine(spec, self)

    def final(self, req: GenerateRequest, count: int, stopped: str | None = None) -> Final:
        """The Final of a generation of `count` pieces, ended by the stop string `stopped` if any."""
        return Final(req.id, "stop" if stopped is not None else self.done_reason, self.prompt_eval_count,
                     self.prompt_eval_duration, count, self.eval_duration,
                     stop_sequence=stopped if stopped is not None else self.stop_sequence)

    def pieces_for(self, req: GenerateRequest) -> list[str]:
        return self.grammar_pieces if req.grammar and self.grammar_pieces is not None else self.pieces

    @staticmethod
    def logprob(i: int) -> float:
        return -0.5 * i

    def logprobs(self, req: GenerateRequest, i: int) -> tuple[TokenLogprob, ...]:
        if not req.logprobs:
            return ()
        piece, value = self.pieces_for(req)[i], self.logprob(i)
        alternatives = [(piece, value)] + [(f"alt{j}", value - j) for j in range(1, req.top_logprobs)]
        top = tuple(TopLogprob(t, v, tuple(t.encode())) for t, v in alternatives[: req.top_logprobs])
        return (TokenLogprob(piece, value, tuple(piece.encode()), top),)

    def embedding(self, normalize: bool) -> tuple[float, ...]:
        if not normalize:
            return self.vector
        norm = math.sqrt(sum(x * x for x in self.vector))
        return tuple(x / norm for x in self.vector)


class ScriptedEngine:
    """One loaded model's engine (the scheduler's EngineLike, plus generate and embed)."""

    def __init__(self, spec: RuntimeSpec, script: ScriptedEngines):
        self.spec = spec
        self.script = script
        self.load_duration_ns = script.load_duration_ns

    async def start(self) -> None:
        self.script.started.append(self.spec.name)

    async def close(self) -> None:
        self.script.closed.append(self.spec.name)

    async def generate(self, req: GenerateRequest) -> AsyncIterator[Chunk | Final]:
        script = self.script
        script.requests.append(req)
        done = False
        pieces, stopped, count = script.pieces_for(req), None, 0
        try:
            for i, piece in enumerate(pieces):
                if script.honour_stops and piece in req.stop:
                    stopped = piece
                    break
                yield Chunk(req.id, piece, script.logprobs(req, i))
                count += 1
                if i == 0 and script.fail_after is not None:
                    raise script.fail_after
            if script.endless:
                await asyncio.Event().wait()  # until the stream is closed
            done = True
            script.finished += 1
            yield script.final(req, count, stopped)
        finally:
            if not done:
                script.closed_early += 1
                script.stream_closed.set()

    async def tokenize(self, text: str) -> list[int]:
        """One token per word (what a prompt's length is measured in when it may not fit)."""
        self.script.tokenized.append(text)
        return list(range(len(text.split())))

    async def embed(self, req: EmbedRequest) -> Embeddings:
        self.script.embedded.append(req)
        vector = self.script.embedding(req.normalize)
        return Embeddings(req.id, tuple(vector for _ in req.inputs), self.script.tokens_per_input * len(req.inputs),
                          5_000)


class Broken:
    """Every method call (sync or async, and `use`) raises `error`: the error-shape tests' dependency."""

    def __init__(self, error: Exception):
        self.error = error

    def __getattr__(self, name: str) -> Any:
        if name in ("close",):
            async def close() -> None:
                return None
            return close

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error
        return fail
