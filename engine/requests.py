"""What callers ask of an engine and what they get back: plain, picklable data.

These types cross the pipe between the server process and a model's worker process, so they hold
only builtins and nested dataclasses. Request planning (corral.runtime.inference) builds them, for
the server and `corral run` alike; the engine (one worker per loaded model, continuous batching
inside) answers with a stream of `Chunk`s ending in one `Final`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Mapping

from corral.dsl.parameters import ParamValue

DoneReason = Literal["stop", "length", "cancel"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings for one request: spec defaults, overridden by request options."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1  # -1: random
    num_predict: int = -1  # -1: until a stop or the context is full; -2: fill the context
    num_keep: int = 4

    @classmethod
    def from_options(cls, *layers: Mapping[str, ParamValue]) -> "Sampling":
        """Merge option dicts left to right (later wins); unknown and load-time keys are ignored."""
        known = {f.name for f in fields(cls)}
        merged: dict[str, object] = {}
        for layer in layers:
            merged.update({k: v for k, v in layer.items() if k in known and v is not None})
        return cls(**merged)  # type: ignore[arg-type]


MEDIA_MARKER = "<__media__>"  # mtmd_default_marker(): where an image goes in a rendered prompt


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """Generate from an already-rendered prompt."""

    id: str
    prompt: str
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF; JSON mode and JSON schemas are compiled to it by the caller
    add_bos: bool = True  # add the model's BOS when the vocabulary asks for it and the text lacks it
    prompt_tokens: tuple[int, ...] | None = None  # the prompt already tokenized (cut to fit, or with a context)
    shift: bool = True  # at num_ctx, drop the oldest tokens after num_keep and go on; False: stop ("length")
    logprobs: bool = False  # each Chunk carries its tokens' log-probabilities
    top_logprobs: int = 0  # and the most likely alternatives at each position (0..20)
    images: tuple[bytes, ...] = ()  # image files (PNG, JPEG, ...), one per MEDIA_MARKER in the prompt
    render_special: bool = False  # control tokens come out as their text (harmony's <|channel|>, for its parser)


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    id: str
    inputs: tuple[str, ...]
    truncate: bool = True
    normalize: bool = True


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """One candidate token at a position: its piece as text, its log-probability and raw bytes."""

    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token's log-probability (before sampling filters), with the `top` candidates."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """Newly generated text (may be empty when a token only completes part of a character).

    `logprobs` holds the tokens whose text this chunk releases, when the request asked for them."""

    id: str
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Final:
    """The end of a generation: what the engine counted and timed (durations in nanoseconds).

    The runtime adds the load and total durations to make Ollama's final statistics
    (corral.runtime.inference.Done), in that one place."""

    id: str
    done_reason: DoneReason
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    prompt_tokens_cached: int = 0
    pauses: int = 0  # times the KV pool was full and this sequence was paused and recomputed
    stop_sequence: str | None = None  # the stop string that ended it (done_reason "stop"), None otherwise
    shifts: int = 0  # times it filled num_ctx and its context was shifted in place
    recomputed_shifts: int = 0  # ... and shifted by evaluating the kept tokens again (cells shared)


@dataclass(frozen=True, slots=True)
class Embeddings:
    id: str
    vectors: tuple[tuple[float, ...], ...]
    prompt_eval_count: int
    duration: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A request failed inside the worker; `kind` picks the exception raised on the caller's side."""

    id: str
    kind: Literal["context", "input", "internal"]
    message: str
