"""One generation, the same for both APIs and for `corral run`: plan the request, hold a runner,
stream events.

Each caller turns its input into a `ChatInput` or `GenerateInput` (the server from an API body,
`corral run` from its conversation); `plan_chat` / `plan_generate` make the engine request from it
and a RuntimeSpec (prompt via the chat template, sampling defaults, stops, grammar for structured
output, tool parsing), raising RequestError (corral.runtime.errors) for input they cannot use;
`run` does the checks that can fail fast (unknown model, bad input) before it asks the scheduler
for a runner, and yields `TextEvent`, `ThinkingEvent` (a thinking model's reasoning, split off by
corral.runtime.thinking), `Calls` and one final `Done`, which carries Ollama's statistics.
It replans if the model was hot-swapped between the check and the lease. Leaving the iteration
early (a client that went away, Ctrl-C) closes the engine's iterator and returns the runner at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
from contextlib import aclosing
from functools import lru_cache
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Callable, Mapping

from corral.compiler.spec import RuntimeSpec
from corral.compiler.capabilities import is_embedding
from corral.compiler.fim import fim_tokens
from corral.compiler.gguf.check import check_gguf
from corral.compiler.variant import load_variant, requested
from corral.engine.errors import EngineError
from corral.engine.requests import (MEDIA_MARKER, EmbedRequest, Embeddings, Final, GenerateRequest, Sampling,
                                    TokenLogprob)
from corral.runtime import truncate
from corral.runtime.errors import InvalidRequestError, UnsupportedRequestError
from corral.runtime.scheduler import ModelSource, Scheduler
from corral.runtime.structured import format_grammar, tool_call_grammar
from corral.runtime.think_first import pieces, turn_for
from corral.runtime.thinking import Split, make_parser, parser_name
from corral.runtime.tools import (ToolCall, ToolStream, functions, messages_without_tools,
                                  template_has_tools)

log = logging.getLogger(__name__)


def request_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class TextEvent:
    """Generated text, as it streams (the IR's `Text` is a definition's string value), with the
    log-probabilities of the tokens it completes when the request asked for them."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ThinkingEvent:
    """Thinking text, as it streams (kept apart from the answer)."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Calls:
    calls: list[ToolCall]


@dataclass(frozen=True)
class Done:
    """The end of a generation, with Ollama's final statistics (nanoseconds).

    The one record of them: the engine's `Final` counts tokens and times the evaluation, `of` adds
    the load and total durations, and `from_reply` reads them back out of a server's final chunk
    (`corral run` through a server).
    """

    done_reason: str = "stop"
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    prompt_cached: int = 0  # prompt tokens reused from a slot's cache, not evaluated again
    stop_sequence: str | None = None  # the stop string that ended the answer, if one did
    context: list[int] | None = None  # /api/generate's: the token ids of the prompt and the reply

    @classmethod
    def of(cls, final: Final, load_duration: int, total_duration: int) -> Done:
        return cls(final.done_reason, final.prompt_eval_count, final.prompt_eval_duration, final.eval_count,
                   final.eval_duration, load_duration, total_duration, final.prompt_tokens_cached,
                   stop_sequence=final.stop_sequence)

    @classmethod
    def from_reply(cls, chunk: Mapping[str, Any]) -> Done:
        """The statistics of an Ollama reply's final chunk (fields left out are zero)."""
        found = {k: chunk[k] for k in ("done_reason", *_STATS) if chunk.get(k) is not None}
        return cls(**found)

    def stats(self) -> dict[str, int]:
        """The metric fields of Ollama's final chunk, zeros left out (Go's omitempty)."""
        return {n: getattr(self, n) for n in _STATS if getattr(self, n)}


_STATS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
          "eval_duration")


Event = TextEvent | ThinkingEvent | Calls | Done


@dataclass
class Plan:
    """An engine request in the making."""

    prompt: str
    sampling: Sampling
    stop: tuple[str, ...]
    grammar: str | None = None
    tool_names: list[str] | None = None  # parse tool calls out of the text when set
    thinking: str | None = None  # the thinking parser (corral.runtime.thinking) when the model thinks
    show_thinking: bool = True  # False: think was false, and what the model still thinks is dropped
    truncate: bool = True  # drop old messages (then cut tokens) to fit num_ctx; False: refuse (corral.runtime.truncate)
    shift: bool = True  # a generation that fills num_ctx shifts the context and goes on; False: it stops
    history: list[dict[str, Any]] | None = None  # a chat's messages, which truncation may drop from the front
    rebuild: Callable[[list[dict[str, Any]]], "Plan"] | None = None  # the same plan for fewer messages
    load: dict[str, Any] = field(default_factory=dict)  # the request's load-time options (num_ctx, ...)
    context: list[int] | None = None  # token ids a generate request continues from (put before the prompt)
    want_context: bool = False  # the final event carries the context (Ollama's generate, unless raw)
    logprobs: bool = False  # text events carry their tokens' log-probabilities
    top_logprobs: int = 0  # with this many alternatives each
    images: tuple[bytes, ...] = ()  # one per MEDIA_MARKER in the prompt, in order (models with a projector)


@dataclass
class ChatInput:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | Mapping[str, Any] | None = None  # OpenAI's: "auto", "none", "required", a function
    format: str | dict | None = None
    options: dict[str, Any] = field(default_factory=dict)
    think: bool | str | None = None
    truncate: bool = True
    shift: bool = True
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class GenerateInput:
    prompt: str
    system: str | None = None
    template: str | None = None
    raw: bool = False
    suffix: str = ""
    images: list[str] | None = None
    format: str | dict | None = None
    options: dict[str, Any] = field(default_factory=dict)
    think: bool | str | None = None
    truncate: bool = True
    shift: bool = True
    context: list[int] | None = None  # an earlier answer's context, continued
    logprobs: bool = False
    top_logprobs: int = 0


def _sampling(spec: RuntimeSpec, options: Mapping[str, Any]) -> tuple[Sampling, tuple[str, ...]]:
    stop = tuple(options["stop"]) if options.get("stop") else tuple(spec.stop)
    return Sampling.from_options(spec.options, options), stop


def _think(spec: RuntimeSpec, think: bool | str | None) -> tuple[str | None, bool | str | None]:
    """The model's thinking parser and the think value its template gets: a thinking model
    thinks unless told not to (as in Ollama); think on any other model is refused."""
    name = parser_name(spec)
    if name is None:
        if think is not None and think is not False:
            raise UnsupportedRequestError(f'"{spec.name}" does not support thinking')
        return None, think
    if name == "harmony" and think == "max":
        think = "high"  # gpt-oss's highest effort, as Ollama maps it
    return name, True if think is None else think


def _check_images(spec: RuntimeSpec, images: list[str] | None) -> None:
    if images and spec.projector is None:
        raise UnsupportedRequestError(f'"{spec.name}" does not support images: it is a text-only model, '
                                      "so send the request without images")


def _decoded(images: list[str] | None, where: str) -> list[bytes]:
    """Base64 images as bytes (a data URL's prefix is tolerated, as Ollama does)."""
    out = []
    for i, text in enumerate(images or []):
        try:
            out.append(base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text,
                                        validate=True))
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"{where}: image {i + 1} is not valid base64", param=where) from None
    return out


def _with_markers(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], tuple[bytes, ...]]:
    """Messages with one MEDIA_MARKER per image before their text (where the chat template puts
    the message, the images go), and the images in prompt order."""
    out, images = [], []
    for i, message in enumerate(messages):
        found = _decoded(message.get("images"), f"messages[{i}].images")
        if found:
            message = {**message, "content": MEDIA_MARKER * len(found) + (message.get("content") or "")}
            images.extend(found)
        out.append(message)
    return out, tuple(images)


@lru_cache(maxsize=64)
def _embeds_only(path: str, size: int, mtime_ns: int | None, architecture: str) -> bool:
    return is_embedding(architecture, check_gguf(Path(path)).metadata)


def _check_generates(spec: RuntimeSpec, route: str) -> None:
    """An embedding model (its capability is `embedding`, not `completion`) cannot generate: refused
    as Ollama refuses it, instead of failing in the engine. The header is read once per file version."""
    w = spec.weights
    if _embeds_only(str(w.path), w.size, w.mtime_ns, spec.model.architecture):
        raise UnsupportedRequestError(f'"{spec.name}" does not support {route}')


def plan_chat(spec: RuntimeSpec, chat: ChatInput) -> Plan:
    from corral.compiler.templates.prompt import chat_prompt

    _check_generates(spec, "chat")
    thinking, think = _think(spec, chat.think)
    for message in chat.messages:
        _check_images(spec, message.get("images"))
    images: tuple[bytes, ...] = ()
    original = chat  # what truncation drops messages from (their images with them)
    if spec.projector is not None:
        rendered, images = _with_markers(chat.messages)
        if images:
            chat = replace(chat, messages=rendered)
    tools = chat.tools if chat.tools and chat.tool_choice != "none" else None
    fns = functions(tools) if tools else []
    forced = _forced(fns, chat.tool_choice) if tools else []
    native = template_has_tools(spec.template.source, spec.template.jinja)
    history_has_tools = any(m.get("tool_calls") or m.get("role") == "tool" for m in chat.messages)
    if native:
        prompt = chat_prompt(spec, chat.messages, tools, think)
    elif tools or history_has_tools:
        prompt = chat_prompt(spec, messages_without_tools(chat.messages, tools, spec.system), None, think)
    else:
        prompt = chat_prompt(spec, chat.messages, None, think)
    if forced:
        grammar = tool_call_grammar(forced, allow_text=False)
    elif chat.format is not None:
        grammar = format_grammar(chat.format)
    elif tools and not native:
        grammar = tool_call_grammar(fns, allow_text=True)
    else:
        grammar = None
    sampling, stop = _sampling(spec, chat.options)
    return Plan(prompt, sampling, stop, grammar, [f["name"] for f in fns] if tools else None, thinking,
                think is not False, chat.truncate, chat.shift, original.messages,
                lambda kept: plan_chat(spec, replace(original, messages=kept)), requested(chat.options),
                logprobs=chat.logprobs, top_logprobs=chat.top_logprobs, images=images)


def _forced(fns: list[dict[str, Any]], choice: str | Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The tools a call must be made to (OpenAI's tool_choice), or [] when the model may answer."""
    if choice == "required":
        return fns
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        chosen = [f for f in fns if f["name"] == name]
        if not chosen:
            raise InvalidRequestError(f"tool_choice: no tool named {name!r} in tools", param="tool_choice")
        return chosen
    return []


def plan_generate(spec: RuntimeSpec, gen: GenerateInput) -> Plan:
    from corral.compiler.templates.prompt import generate_prompt

    _check_generates(spec, "generate")
    thinking, think = _think(spec, gen.think)
    _check_images(spec, gen.images)
    images = tuple(_decoded(gen.images, "images")) if spec.projector is not None else ()
    if images:  # before the prompt's text, as Ollama puts a generate request's images
        gen = replace(gen, prompt=MEDIA_MARKER * len(images) + gen.prompt)
    if gen.suffix:
        fim = fim_tokens(spec.weights.path, spec.weights.size, spec.weights.mtime_ns)
        if fim is None:
            raise UnsupportedRequestError(f'"{spec.name}" does not support insert: its vocabulary has no '
                                          "fill-in-the-middle tokens, so send the request without suffix",
                                          param="suffix")
        prompt = fim.prompt(gen.prompt, gen.suffix)  # the FIM tokens are the whole format: no template
    else:
        prompt = generate_prompt(spec, gen.prompt, gen.system, gen.template, gen.raw, think)
    sampling, stop = _sampling(spec, gen.options)
    return Plan(prompt, sampling, stop, format_grammar(gen.format), thinking=thinking,
                show_thinking=think is not False, truncate=gen.truncate, shift=gen.shift,
                load=requested(gen.options), context=gen.context, want_context=not gen.raw,
                logprobs=gen.logprobs, top_logprobs=gen.top_logprobs, images=images)


Planner = Callable[[RuntimeSpec], Plan]


async def run(scheduler: Scheduler, models: ModelSource, name: str, keep_alive: float | None,
              planner: Planner) -> AsyncIterator[Event]:
    """Generate for one request; see the module docstring."""
    started = time.perf_counter_ns()
    spec = await asyncio.to_thread(models.spec, name)
    plan = await asyncio.to_thread(planner, spec)  # a template renders for up to 1 s: off the loop
    spec, variant = await _variant(models, spec, plan.load)
    async with scheduler.use(name, keep_alive, spec, variant) as lease:
        if lease.spec.digest != spec.digest:
            plan = await asyncio.to_thread(planner, lease.spec)
        plan, tokens = await _fit(plan, lease.spec.load.num_ctx, lease.engine.tokenize)
        if plan.context:
            tokens = await _continue(plan, tokens, lease.spec.load.num_ctx, lease.engine.tokenize)
        request = GenerateRequest(id=request_id(), prompt=plan.prompt, sampling=plan.sampling,
                                  stop=plan.stop, grammar=plan.grammar,
                                  prompt_tokens=tuple(tokens) if tokens is not None else None, shift=plan.shift,
                                  logprobs=plan.logprobs or plan.top_logprobs > 0,
                                  top_logprobs=plan.top_logprobs, images=plan.images,
                                  # harmony's headers are control tokens: its parser reads them
                                  render_special=plan.thinking == "harmony")
        parser = ToolStream(plan.tool_names) if plan.tool_names is not None else None
        thinker = make_parser(plan.thinking, plan.prompt) if plan.thinking else None
        # A thinking model thinks before its grammar holds it (think_first.py), as in Ollama.
        turn = turn_for(plan.thinking) if plan.thinking and plan.show_thinking else None
        final: Final | None = None
        produced: list[str] = []
        pending: list[TokenLogprob] = []  # log-probabilities whose text a parser still holds
        async with aclosing(pieces(lease.engine, request, thinker, turn)) as items:
            async for item in items:
                if isinstance(item, Final):
                    final = item
                    continue
                produced.append(item.raw)
                pending.extend(item.logprobs)
                for event in _with_logprobs(_split_events(item.split, parser, plan.show_thinking), pending):
                    yield event
        if parser is not None:
            rest, calls = parser.finish()
            if rest:
                yield TextEvent(rest)
            if calls:
                yield Calls(calls)
        if pending:
            yield TextEvent("", tuple(pending))
        if final is None:
            raise EngineError("the model stopped without finishing its answer")
        done = Done.of(final, lease.load_duration_ns, time.perf_counter_ns() - started)
        if plan.want_context:  # as Ollama makes it: the prompt and the reply, tokenized again
            done = replace(done, context=list(plan.context or []) +
                           await lease.engine.tokenize(plan.prompt + "".join(produced)))
        yield done


async def _variant(models: ModelSource, spec: RuntimeSpec, load: Mapping[str, Any]) -> tuple[RuntimeSpec, bool]:
    """The spec to load for a request's load-time options, and whether it differs from the model's."""
    options = getattr(models, "options", None)  # the machine's compile options (a Catalog has them)
    if not load or options is None:
        return spec, False
    variant, notes = await asyncio.to_thread(load_variant, spec, load, options)
    for note in notes:
        log.info("%s", note)
    if variant is not spec:
        log.info("%s is loaded with the request's %s", spec.name,
                 ", ".join(f"{k} {v}" for k, v in sorted(load.items())))
    return variant, variant is not spec


async def _continue(plan: Plan, tokens: list[int] | None, num_ctx: int, tokenize: truncate.Tokenize) -> list[int]:
    """The prompt's tokens after the request's context, cut (or refused) as `_fit` would."""
    full = list(plan.context or []) + (tokens if tokens is not None else await tokenize(plan.prompt))
    budget = truncate.prompt_budget(num_ctx, plan.sampling.num_predict)
    if len(full) + 1 <= budget:
        return full
    if not plan.truncate:
        if len(full) + 1 > num_ctx:
            raise truncate.too_long(len(full) + 1, num_ctx)
        return full
    log.warning("truncating the context and prompt from %d to %d tokens (num_ctx %d)", len(full) + 1, budget, num_ctx)
    return truncate.trim_tokens(full, budget - 1, plan.sampling.num_keep)


async def _fit(plan: Plan, num_ctx: int, tokenize: truncate.Tokenize) -> tuple[Plan, list[int] | None]:
    """The plan whose prompt fits num_ctx (older messages dropped) and its tokens if they were cut."""
    history = plan.history
    plans = {0: plan}

    def prompt_at(start: int) -> str:
        if start not in plans and history is not None and plan.rebuild is not None:
            plans[start] = plan.rebuild(truncate.window(history, start))
        return plans[start].prompt

    start, tokens = await truncate.fit(prompt_at, history if plan.rebuild else None, num_ctx=num_ctx,
                                       num_predict=plan.sampling.num_predict, num_keep=plan.sampling.num_keep,
                                       truncate=plan.truncate, tokenize=tokenize)
    return plans[start], tokens


def _split_events(split: Split, tools: ToolStream | None, show_thinking: bool) -> list[Event]:
    """The events of one parsed piece: its thinking, then its answer (through the tool parser)."""
    out: list[Event] = []
    if split.thinking and show_thinking:
        out.append(ThinkingEvent(split.thinking))
    text = tools.feed(split.content) if tools and split.content else split.content
    if text:
        out.append(TextEvent(text))
    return out


def _with_logprobs(events: list[Event], pending: list[TokenLogprob]) -> list[Event]:
    """Attach the pending log-probabilities to the last text of `events` (emptying `pending`)."""
    if not pending:
        return events
    for i in range(len(events) - 1, -1, -1):
        if isinstance(events[i], (TextEvent, ThinkingEvent)):
            events[i] = replace(events[i], logprobs=tuple(pending))
            pending.clear()
            break
    return events


async def count_tokens(scheduler: Scheduler, models: ModelSource, name: str, planner: Planner) -> int:
    """The number of tokens of the prompt a request would send (Anthropic's count_tokens)."""
    spec = await asyncio.to_thread(models.spec, name)
    plan = await asyncio.to_thread(planner, spec)  # a template renders for up to 1 s: off the loop
    async with scheduler.use(name, None, spec) as lease:
        if lease.spec.digest != spec.digest:
            plan = await asyncio.to_thread(planner, lease.spec)
        return len(await lease.engine.tokenize(plan.prompt))


async def load_or_unload(scheduler: Scheduler, models: ModelSource, name: str, keep_alive: float | None) -> str:
    """Ollama's empty prompt: load the model (or, with keep_alive 0, unload it); the done_reason."""
    await asyncio.to_thread(models.spec, name)  # an unknown model is a 404 either way
    if keep_alive == 0:
        await scheduler.unload(name)
        return "unload"
    await scheduler.load(name, keep_alive)
    return "load"


async def render_only(models: ModelSource, name: str, planner: Planner) -> tuple[str, int]:
    """Ollama's `_debug_render_only`: the prompt a request would send (as rendered, before it is
    fitted to num_ctx) and how many images it holds, without loading the model or generating."""
    spec = await asyncio.to_thread(models.spec, name)
    plan = await asyncio.to_thread(planner, spec)  # a template may run for its time cap: off the loop
    return plan.prompt, len(plan.images)


@dataclass(frozen=True)
class EmbedResult:
    vectors: list[list[float]]
    prompt_eval_count: int
    load_duration: int
    total_duration: int


async def embed(scheduler: Scheduler, models: ModelSource, name: str, inputs: list[str], *, truncate: bool,
                normalize: bool, keep_alive: float | None, options: Mapping[str, Any] | None = None) -> EmbedResult:
    """Embed `inputs` (an empty list only loads the model); load-time `options` load a variant."""
    started = time.perf_counter_ns()
    spec = await asyncio.to_thread(models.spec, name)
    spec, variant = await _variant(models, spec, requested(options or {}))
    async with scheduler.use(name, keep_alive, spec, variant) as lease:
        if not inputs:
            return EmbedResult([], 0, lease.load_duration_ns, time.perf_counter_ns() - started)
        result: Embeddings = await lease.engine.embed(
            EmbedRequest(id=request_id(), inputs=tuple(inputs), truncate=truncate, normalize=normalize))
        return EmbedResult([list(v) for v in result.vectors], result.prompt_eval_count,
                           lease.load_duration_ns, time.perf_counter_ns() - started)


def shorten(vector: list[float], dimensions: int | None) -> list[float]:
    """Cut a normalized vector to `dimensions` and normalize it again (Ollama's `dimensions`)."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    cut = vector[:dimensions]
    norm = sum(x * x for x in cut) ** 0.5
    return [x / norm for x in cut] if norm > 0 else cut
