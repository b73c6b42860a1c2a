"""Speculative decoding for one greedy sequence: a draft model proposes, the target verifies.

The draft model (same vocabulary, smaller) runs in a second llama context in the worker. Each
round it proposes `n_draft` tokens greedily after the sequence's tokens; the target decodes its
last sampled token and the proposals in one batch, with logits at every position, and picks its
own greedy token at each. The longest run of proposals that matches is accepted, plus the
target's token after it (so a round yields 1 to n_draft + 1 tokens for one target decode), and
the target's KV is cut back past the rejected proposals. The draft's KV is brought in line with
the accepted tokens at the start of the next round.

Only greedy sequences speculate (temperature 0, no grammar, no penalties): for them the accepted
tokens are exactly the target's own choices, so the answer is the one plain decoding gives (up
to llama.cpp's batch variance, see the tests). Sampled sequences decode plainly: rejection
sampling against the draft's distribution is not implemented.
"""

from __future__ import annotations

import llama_cpp

from corral.engine.llama import Batch, Context, Model
from corral.engine.prefix import common_prefix
from corral.engine.requests import Sampling


def speculates(sampling: Sampling, grammar: str | None) -> bool:
    """Whether a request's tokens are the target's greedy choices, so that drafts can be verified
    by comparing tokens."""
    return (sampling.temperature <= 0 and grammar is None and sampling.repeat_penalty == 1.0
            and sampling.presence_penalty == 0.0 and sampling.frequency_penalty == 0.0)


class Greedy:
    """llama.cpp's greedy sampler: the argmax of one output row, without copying the logits."""

    def __init__(self) -> None:
        self._smpl = llama_cpp.llama_sampler_init_greedy()

    def pick(self, ctx: Context, index: int) -> int:
        return int(llama_cpp.llama_sampler_sample(self._smpl, ctx.handle, index))

    def close(self) -> None:
        if self._smpl:
            llama_cpp.llama_sampler_free(self._smpl)
            self._smpl = None


class Drafter:
    """The draft model's context, holding one sequence (0) that follows the target's tokens."""

    def __init__(self, model: Model, ctx: Context, n_draft: int) -> None:
        self.model = model
        self.ctx = ctx
        self.n_draft = n_draft
        self._cached: list[int] = []  # exactly the tokens in the draft's KV
        self._batch = Batch(ctx.n_batch)
        self._greedy = Greedy()
        self.target_greedy = Greedy()  # picks the target's tokens when verifying

    def propose(self, tokens: list[int], n: int) -> list[int]:
        """Up to `n` greedy tokens to follow `tokens` (the sequence so far, its last not yet
        decoded by the target); fewer when the draft's context is full."""
        n = min(n, self.ctx.n_ctx - len(tokens))
        if n <= 0:
            return []
        keep = min(common_prefix(self._cached, tokens), len(tokens) - 1)
        if keep < len(self._cached):
            if not self.ctx.seq_rm(0, keep, -1):
                self.ctx.seq_rm(0, -1, -1)
                keep = 0
            del self._cached[keep:]
        feed = tokens[keep:]
        proposed: list[int] = []
        while len(proposed) < n:
            index = -1
            for start in range(0, len(feed), self._batch.capacity):  # a long catch-up, in chunks
                self._batch.clear()
                chunk = feed[start: start + self._batch.capacity]
                index = self._batch.add(chunk, len(self._cached), 0)
                if self.ctx.decode(self._batch) != 0:
                    return proposed  # no draft this round: the target decodes plainly
                self._cached.extend(chunk)
            token = self._greedy.pick(self.ctx, index)
            if self.model.is_eog(token):
                break
            proposed.append(token)
            feed = [token]
        return proposed

    def close(self) -> None:
        self._greedy.close()
        self.target_greedy.close()
        self._batch.close()
        self.ctx.close()  # the draft's context is its own; the model's owner frees the model


def accepted(proposed: list[int], verified: list[int]) -> list[int]:
    """The tokens a round yields: the proposals the target agreed with, then the target's own
    token after them. `verified[i]` is the target's choice after the i-th batch position
    (position 0 being the last token before the proposals)."""
    n = 0
    while n < len(proposed) and verified[n] == proposed[n]:
        n += 1
    return proposed[:n] + [verified[n]]


def verify(ctx: Context, batch: Batch, greedy: Greedy, seq: int, pos: int, last: int,
           proposed: list[int]) -> list[int] | None:
    """Decode `last` (at `pos`) and the proposals in one batch of sequence `seq`; returns the
    accepted tokens, having cut the KV past the last accepted one (whose own token is not yet
    decoded, like any sampled token). None when the decode failed (the KV is then cut back to
    `pos`)."""
    batch.clear()
    batch.add([last, *proposed], pos, seq, output="all")
    if ctx.decode(batch) != 0:
        ctx.seq_rm(seq, pos, -1)
        return None
    verified = [greedy.pick(ctx, i) for i in range(len(proposed) + 1)]
    tokens = accepted(proposed, verified)
    # In the KV now: last and every proposal. Keep last and the accepted proposals.
    ctx.seq_rm(seq, pos + len(tokens), -1)
    return tokens
