"""One llama.cpp sampler chain per slot, built from a request's `Sampling` and grammar.

The chain runs in llama.cpp's usual order: penalties, grammar, top-k, typical, top-p, min-p,
temperature, then a seeded random pick; temperature 0 picks greedily after penalties and grammar.
Filters at their neutral value (top_k 0, top_p 1, ...) are left out rather than run as no-ops.

A grammar is checked the way llama.cpp's common sampler does it: sample without the grammar, ask
the grammar about that one token, and only when it refuses, sample again with the grammar applied
to the whole vocabulary first (so the truncating filters only see allowed tokens). Applying a
grammar to 50k candidates costs milliseconds per token; checking one token costs microseconds,
and the model's own choice is usually allowed. Prompt tokens go into the penalties sampler only
(as llama-server does); the grammar must not see them.
"""

from __future__ import annotations

import ctypes
import math
import secrets
from typing import Callable, Sequence

import llama_cpp
import numpy as np  # a dependency of llama-cpp-python

from corral.engine.errors import EngineInputError
from corral.engine.llama import Context, Model, native_stderr, take_errors
from corral.engine.requests import Sampling, TokenLogprob, TopLogprob

_SamplerPtr = llama_cpp.llama_sampler_p_ctypes

# llama.cpp reads the seed 0xFFFFFFFF as "pick one at random"; we pick ourselves, below it.
_SEED_LIMIT = 0xFFFFFFFF


def resolve_seed(seed: int) -> int:
    """A request's seed as llama.cpp takes it: -1 (or any negative) draws a fresh random seed."""
    if seed < 0:
        return secrets.randbelow(_SEED_LIMIT)
    return seed % _SEED_LIMIT


def penalty_window(sampling: Sampling, n_ctx: int) -> int:
    """Ollama's repeat_last_n: 0 turns penalties off, -1 means the whole context."""
    return n_ctx if sampling.repeat_last_n < 0 else sampling.repeat_last_n


def _uses_penalties(sampling: Sampling, window: int) -> bool:
    neutral = (sampling.repeat_penalty == 1.0 and sampling.frequency_penalty == 0.0
               and sampling.presence_penalty == 0.0)
    return window > 0 and not neutral


def check_grammar(model: Model, grammar: str) -> None:
    """Raise EngineInputError unless llama.cpp accepts the GBNF text (rule `root` starts it)."""
    llama_cpp.llama_sampler_free(_grammar_sampler(model, grammar))


def _grammar_sampler(model: Model, grammar: str) -> _SamplerPtr:
    take_errors()
    with native_stderr() as printed:
        sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        detail = _parse_error(printed[0]) or "; ".join(take_errors()) or "llama.cpp rejected it"
        raise EngineInputError(f"invalid grammar: {detail}",
                               hint="grammars are GBNF, starting from a rule named root")
    return sampler


def _parse_error(stderr_text: str) -> str:
    """The first line of llama.cpp's "parse: error parsing grammar: ..." message, if any."""
    for line in stderr_text.splitlines():
        _, found, rest = line.partition("error parsing grammar: ")
        if found:
            return rest.strip()
    return ""


def token_logprob(ctx: Context, index: int, n_vocab: int, token: int, top: int,
                  piece: Callable[[int], bytes]) -> TokenLogprob:
    """The log-probability of `token` among the raw logits at batch `index`, and the `top` most
    likely tokens there: a log-softmax of the model's distribution before any sampling filter (as
    llama-server reports it with post_sampling_probs off). Only requests that ask pay for it."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.handle, index), shape=(n_vocab,))
    peak = float(logits.max())
    log_total = peak + math.log(float(np.exp(logits - peak, dtype=np.float64).sum()))
    best: tuple[TopLogprob, ...] = ()
    if top > 0:
        k = min(top, n_vocab)
        ids = np.argpartition(logits, n_vocab - k)[n_vocab - k:]
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        best = tuple(_candidate(int(i), float(logits[i]) - log_total, piece) for i in ids)
    chosen = _candidate(token, float(logits[token]) - log_total, piece)
    return TokenLogprob(chosen.token, chosen.logprob, chosen.bytes, best)


def _candidate(token: int, logprob: float, piece: Callable[[int], bytes]) -> TopLogprob:
    raw = piece(token)
    return TopLogprob(raw.decode("utf-8", errors="replace"), min(logprob, 0.0), tuple(raw))


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class SlotSampler:
    """A sampler chain owned by one running request; `close()` frees it."""

    def __init__(self, model: Model, sampling: Sampling, grammar: str | None, *, n_ctx: int) -> None:
        self.seed = resolve_seed(sampling.seed)
        self.n_vocab = model.n_vocab
        self._chain: _SamplerPtr | None = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params())
        self._penalties: _SamplerPtr | None = None
        self._grammar: _SamplerPtr | None = None  # outside the chain; see the module docstring
        try:
            self._build(model, sampling, n_ctx)
            if grammar:
                self._grammar = _grammar_sampler(model, grammar)
                self._candidates = np.zeros(self.n_vocab, dtype=_TOKEN_DATA)
                self._ids = np.arange(self.n_vocab, dtype=np.int32)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: _SamplerPtr) -> _SamplerPtr:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)  # the chain now owns it
        return sampler

    def _build(self, model: Model, s: Sampling, n_ctx: int) -> None:
        window = penalty_window(s, n_ctx)
        if _uses_penalties(s, window):
            self._penalties = self._add(llama_cpp.llama_sampler_init_penalties(
                model.n_vocab, window, s.repeat_penalty, s.frequency_penalty, s.presence_penalty))
        if s.temperature <= 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if s.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(s.top_k))
        if 0 < s.typical_p < 1:
            self._add(llama_cpp.llama_sampler_init_typical(s.typical_p, 1))
        if 0 < s.top_p < 1:
            self._add(llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0:
            self._add(llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(s.temperature))
        self._add(llama_cpp.llama_sampler_init_dist(self.seed))

    def accept_prompt(self, tokens: Sequence[int]) -> None:
        """Let the repeat penalties see the prompt (the grammar must not)."""
        if self._penalties is None:
            return
        for token in tokens:
            llama_cpp.llama_sampler_accept(self._penalties, token)

    def sample(self, ctx: Context, index: int) -> int:
        """Pick a token from the logits at batch `index` of the last decode, and accept it."""
        if self._grammar is None:
            return llama_cpp.llama_sampler_sample(self._chain, ctx.handle, index)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.handle, index), shape=(self.n_vocab,))
        token = self._pick(logits, grammar_first=False)
        if not self._grammar_allows(token):
            token = self._pick(logits, grammar_first=True)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _pick(self, logits: np.ndarray, *, grammar_first: bool) -> int:
        candidates = self._candidates
        candidates["id"] = self._ids  # the filters sort in place: reset every time
        candidates["logit"] = logits
        candidates["p"] = 0.0
        data = candidates.ctypes.data_as(llama_cpp.llama_token_data_p)
        array = llama_cpp.llama_token_data_array(data, self.n_vocab, -1, False)
        if grammar_first:
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(array))
        return int(array.data[array.selected].id)  # a sampler may repoint `data`: read it back

    def _grammar_allows(self, token: int) -> bool:
        one = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 1.0, 0.0))
        array = llama_cpp.llama_token_data_array(one, 1, -1, False)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return not math.isinf(one[0].logit)

    def close(self) -> None:
        for name in ("_chain", "_grammar"):
            sampler = getattr(self, name, None)
            if sampler is not None:
                llama_cpp.llama_sampler_free(sampler)
                setattr(self, name, None)
        self._penalties = None
