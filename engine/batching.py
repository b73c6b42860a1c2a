"""The step loop inside a model's worker: continuous batching over one shared KV pool.

The generation context has one unified KV cache of `pool` cells (sized by the memory plan) and up
to `n_seqs` sequence ids. A sequence holds only the cells its tokens use, so many short requests
run side by side where a fixed split would hold a few full-length slots. Each `step()` builds one
llama_batch and runs one llama_decode for every request in flight:

1. Paused sequences (below), then queued requests, take free sequence ids while the pool has room
   for their prompt plus a small reserve; when it has not, they wait, in order, and never fail.
   The longest prefix of a new prompt that any sequence, running or idle, holds in the cache is
   shared with it (llama_memory_seq_cp tags those cells for it too; see prefix.py), and only
   the rest of the prompt is evaluated. Idle sequences' cached tokens are dropped, least
   recently used first, when the pool needs their cells.
2. Every generating sequence adds its last sampled token first, so generation never waits. One
   that finds no free cell pauses the youngest running sequence: its cells are freed and it goes
   back to the head of the line with its tokens, to be recomputed when room returns. The oldest
   sequence always fits (one request never exceeds num_ctx, and the pool holds at least that).
3. Prompts fill the rest of the batch (`n_batch` minus the generating sequences) in arrival order,
   as far as the pool has cells: a long prompt is evaluated in chunks over several steps while the
   others keep streaming.
   On the CPU at most CPU_DECODE_ROWS generating sequences go into one decode (more take
   several decodes in the step), where llama.cpp's attention skips other sequences' cells.
4. After the decode, each sequence whose logits came out samples its next token at its own batch
   index; text goes through its UTF-8 decoder and stop matcher, and a request ends on an
   end-of-generation token or a stop string ("stop"), or on num_predict ("length"). A sequence
   that reaches num_ctx shifts, as Ollama's runner does: the first num_keep tokens stay, half of
   the rest is discarded, and the KV of what follows moves down in place (llama_memory_seq_add),
   or is evaluated again where those cells are shared with another sequence. With shift off, or
   num_predict -2, it ends there ("length").

Embedding requests are batched the same way on a separate embeddings context: several inputs in
one decode, one sequence id each. A cancelled request leaves its sequence at once; the tokens
already in its KV stay there for prefix reuse, like those of a finished request.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Union

from corral.engine.errors import EngineInputError
from corral.engine.llama import Batch, Context, Model
from corral.engine.prefix import CellLedger, common_prefix, longest_prefix
from corral.engine.speculative import Drafter, speculates, verify
from corral.engine.requests import Chunk, Embeddings, EmbedRequest, Failure, Final, GenerateRequest, TokenLogprob
from corral.engine.sampling import SlotSampler, check_grammar, penalty_window, token_logprob
from corral.engine.stops import StopMatcher, Utf8Decoder
from corral.engine.vision import Prepared, Vision

log = logging.getLogger(__name__)

Outbound = Union[Chunk, Final, Embeddings, Failure]


def overflow_message(what: str, n_tokens: int, limit: int) -> str:
    return f"{what} is {n_tokens} tokens, more than the context window of {limit} tokens (num_ctx)"


# The shortest prefix shared from another sequence. Cells computed in another batch make llama.cpp
# sum in another order (it is not batch-invariant), so a greedy answer may change after a near
# tie; sharing a chat template's few first tokens saves nothing worth that.
MIN_SHARED = 64

# On the CPU, llama.cpp's flash attention takes a batch of 64 query tokens or more a tile of 64
# at a time, and skips a tile of cells only when every query in it is masked from them. In one
# shared cache the cells of all sequences are interleaved, so 64 sequences' next tokens in one
# decode attend densely to every cell in use (SmolLM2 at 64 clients: 156 tokens/s against 285 at
# 32). Below 64 it skips each query's masked cells one by one. So a CPU worker decodes at most
# this many sequences' tokens at once, in several decodes per step when more are generating.
CPU_DECODE_ROWS = 63

# Cells kept free beyond a new prompt when it is admitted, so that it can produce a few tokens
# before it has to compete for cells with the sequences already running.
ADMIT_RESERVE = 16


@dataclass
class _Job:
    """A generate request in a sequence (or paused, waiting for one)."""

    req: GenerateRequest
    prompt: list[int]
    sampler: SlotSampler
    order: int
    reused: int
    limit: int | None  # num_predict, None for "until a stop or the context is full"
    feed: list[int] = field(default_factory=list)  # tokens to evaluate before sampling: the prompt, or all so far on resume
    stops: StopMatcher = field(init=False)
    decoder: Utf8Decoder = field(default_factory=Utf8Decoder)
    generating: bool = False
    last: int = -1  # the sampled token that the next step decodes
    chunk: list[int] = field(default_factory=list)  # this step's tokens in the batch
    index: int = -1  # batch index of this step's logits, -1 when none
    n_out: int = 0
    pauses: int = 0
    shifts: int = 0
    recomputed_shifts: int = 0
    prompt_ns: int = 0
    eval_ns: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)  # tokens whose text is not out yet

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.req.stop)
        self.feed = self.feed or list(self.prompt)


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # exactly the tokens in this sequence's KV
    job: _Job | None = None
    last_used: int = 0


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the KV pool and the sequences using it (for metrics and tests)."""

    pool_cells: int
    used_cells: int  # cells of running sequences
    cached_cells: int  # cells idle sequences keep for prefix reuse (freed on demand)
    max_sequences: int
    running: int
    queued: int
    paused: int
    pauses: int  # sequences paused since start


class BatchLoop:
    """Sequences, admission by free cells and the per-step batch; embeddings via `EmbedBatcher`.

    The worker's loop over one model; the scheduler that loads and evicts models is
    corral.runtime.scheduler.Scheduler."""

    def __init__(self, model: Model, ctx: Context, *, n_seqs: int, seq_ctx: int, pool: int,
                 embedder: "EmbedBatcher", prefix_cache: bool = True, vision: "Vision | None" = None) -> None:
        if seq_ctx > pool:
            raise ValueError(f"a pool of {pool} cells cannot hold one sequence of {seq_ctx} tokens")
        self.model = model
        self.ctx = ctx
        self.seq_ctx = seq_ctx
        self.pool = pool
        self.embedder = embedder
        self._slots = [_Slot(seq=i) for i in range(n_seqs)]
        self._ledger = CellLedger(n_seqs)
        self.vision = vision  # the projector, for requests with images (engine/vision.py)
        self._images: dict[str, Prepared] = {}  # queued requests' multimodal prompts, by id
        # Off: every prompt is evaluated in full (CORRAL_PREFIX_CACHE=off, for comparisons). A
        # recurrent model's state cannot be cut at a position, so it is never shared.
        self.prefix_cache = prefix_cache and not model.is_recurrent
        self._queue: deque[tuple[GenerateRequest, list[int]]] = deque()
        self._paused: deque[_Job] = deque()
        self._batch = Batch(ctx.n_batch)
        self._out: list[Outbound] = []
        self._counter = 0
        self._pauses = 0
        # The model's DRAFT (speculative.py), set by the worker; it speculates for a lone greedy
        # sequence only: with several running, the batch already fills the step, and the draft
        # model's decodes would come on top of it.
        self.drafter: Drafter | None = None
        self.n_draft = 0
        # Generating sequences decoded together at most (CPU_DECODE_ROWS on the CPU; None: all).
        self.decode_rows: int | None = None

    @property
    def busy(self) -> bool:
        """Whether a step would do any work."""
        return bool(self._queue or self._paused or self._out or self.embedder.busy
                    or any(s.job for s in self._slots))

    def stats(self) -> PoolStats:
        running = [s for s in self._slots if s.job]
        used = self._ledger.distinct(s.seq for s in running)
        return PoolStats(self.pool, used, self._cells() - used, len(self._slots), len(running),
                         len(self._queue), len(self._paused), self._pauses)

    def submit(self, req: GenerateRequest) -> None:
        """Queue a request; a prompt that cannot run fails at once (on the next step's output)."""
        try:
            tokens = self._image_tokens(req) if req.images else self._prompt_tokens(req)
            if req.grammar:
                check_grammar(self.model, req.grammar)
        except EngineInputError as e:
            self._out.append(Failure(req.id, "input", e.message))
            return
        if len(tokens) > self.seq_ctx:
            self._out.append(Failure(req.id, "context", overflow_message("the prompt", len(tokens), self.seq_ctx)))
            return
        self._queue.append((req, tokens))

    def submit_embed(self, req: EmbedRequest) -> None:
        self._out.extend(self.embedder.submit(req))

    def _prompt_tokens(self, req: GenerateRequest) -> list[int]:
        # The prompt was rendered by a chat template, so control-token text in it is meant.
        tokens = (list(req.prompt_tokens) if req.prompt_tokens is not None
                  else self.model.tokenize(req.prompt, add_special=False, parse_special=True))
        if req.add_bos and self.model.add_bos and (not tokens or tokens[0] != self.model.bos):
            tokens.insert(0, self.model.bos)
        if not tokens:
            raise EngineInputError("the prompt is empty")
        return tokens

    def _image_tokens(self, req: GenerateRequest) -> list[int]:
        """A prompt with images, cut into chunks by the projector; image cells get negative ids."""
        if self.vision is None:
            raise EngineInputError("this model has no projector, so it cannot see images")
        bos_text = self.model.token_to_piece(self.model.bos, special=True).decode("utf-8", "replace")
        bos = req.add_bos and self.model.add_bos and not (bos_text and req.prompt.startswith(bos_text))
        prepared = self.vision.tokenize(req.prompt, req.images, add_special=bos)
        self._images[req.id] = prepared
        return prepared.tokens

    def _evaluate_images(self, slot: _Slot) -> None:
        """Run an admitted request's text and image chunks into its sequence, all but the last
        token (the batch decodes that one and samples from its logits)."""
        prepared = self._images.pop(slot.job.req.id)
        try:
            self._drop(slot)  # images are evaluated from position 0: nothing is shared
            slot.job.reused = 0
            started = time.monotonic_ns()
            n = prepared.evaluate(self.ctx, slot.seq)
            slot.job.prompt_ns += time.monotonic_ns() - started
            slot.cached.extend(slot.job.prompt[:n])
            self._ledger.append(slot.seq, n)
        finally:
            prepared.close()

    def cancel(self, request_id: str) -> None:
        """Forget a request: out of the queue, the paused line, or its sequence, right away."""
        self._queue = deque(q for q in self._queue if q[0].id != request_id)
        if request_id in self._images:
            self._images.pop(request_id).close()
        for job in [j for j in self._paused if j.req.id == request_id]:
            self._paused.remove(job)
            job.sampler.close()
        for slot in self._slots:
            if slot.job and slot.job.req.id == request_id:
                self._release(slot)
        self.embedder.cancel(request_id)

    def step(self) -> list[Outbound]:
        """Admit, decode once, sample; returns the messages for the parent, in order."""
        out, self._out = self._out, []
        self._admit(out)
        self._generate(out)
        if self.embedder.busy:
            self.embedder.step(out)
        return out

    def set_threads(self, n: int) -> None:
        """Threads for every context the loop decodes on: generation, embeddings and the draft."""
        self.ctx.set_threads(n)
        self.embedder.set_threads(n)
        if self.drafter is not None:
            self.drafter.ctx.set_threads(n)

    def close(self) -> None:
        for slot in self._slots:
            if slot.job:
                self._release(slot)
        for job in self._paused:
            job.sampler.close()
        self._paused.clear()
        self._batch.close()
        if self.drafter is not None:
            self.drafter.close()
        self.embedder.close()

    # -- cells ---------------------------------------------------------------------------------

    def _cells(self) -> int:
        return self._ledger.used

    def _make_room(self, need: int, keep: _Slot | None = None) -> bool:
        """Free cells of idle sequences (least recently used first) until `need` are free."""
        if self.pool - self._cells() >= need:
            return True
        for slot in sorted((s for s in self._slots if s.job is None and s.cached and s is not keep),
                           key=lambda s: s.last_used):
            self._drop(slot)  # frees only the cells no other sequence shares
            if self.pool - self._cells() >= need:
                return True
        return False

    def _drop(self, slot: _Slot) -> None:
        self.ctx.seq_rm(slot.seq, -1, -1)
        self._ledger.truncate(slot.seq, 0)
        slot.cached.clear()

    def _trim(self, slot: _Slot, keep: int) -> int:
        """Cut a sequence's KV to its first `keep` tokens; returns what it keeps (0 when the
        model cannot cut at a position)."""
        if keep >= len(slot.cached):
            return len(slot.cached)
        if keep == 0 or not self.ctx.seq_rm(slot.seq, keep, -1):
            self._drop(slot)
            return 0
        self._ledger.truncate(slot.seq, keep)
        del slot.cached[keep:]
        return keep

    def _place(self, tokens: list[int], free: list[_Slot]) -> tuple[_Slot, int]:
        """A free sequence for `tokens`, holding the longest cached prefix of them there is;
        returns it and how many tokens it holds (at most all but one: the last must be decoded
        to produce logits)."""
        if not self.prefix_cache:
            slot = min(free, key=lambda s: (len(s.cached), s.last_used))
            self._drop(slot)
            return slot, 0
        cap = len(tokens) - 1
        source, shared = longest_prefix(tokens, ((s, s.cached) for s in self._slots if s.cached))
        shared = min(shared, cap)
        own = {s.seq: min(common_prefix(s.cached, tokens), cap) for s in free}
        if shared < MIN_SHARED:  # a chat template's first tokens: reuse only a sequence's own cache
            slot = max(free, key=lambda s: (own[s.seq], -s.last_used))
            return slot, self._trim(slot, own[slot.seq])
        # The sequence to take loses its cached tokens beyond what the prompt shares with them:
        # take the one that loses fewest (an empty one, or one this prompt continues), so that a
        # conversation's history stays for its next turn; then the least recently used.
        slot = min(free, key=lambda s: (len(s.cached) - own[s.seq], own[s.seq] < shared, s.last_used))
        if source is None or source is slot or own[slot.seq] >= shared:
            return slot, self._trim(slot, own[slot.seq])
        self._drop(slot)
        self.ctx.seq_cp(source.seq, slot.seq, 0, shared)
        self._ledger.copy(source.seq, slot.seq, shared)
        slot.cached = list(tokens[:shared])
        return slot, shared

    # -- admission -----------------------------------------------------------------------------

    def _admit(self, out: list[Outbound]) -> None:
        # Paused sequences first: they were admitted before anything still queued.
        while self._paused:
            free = [s for s in self._slots if s.job is None]
            job = self._paused[0]
            if not free:
                return
            # Its own tokens may still be shared by others (a common system prompt).
            slot, kept = self._place(job.feed, free)
            if not self._make_room(len(job.feed) - kept + 1, keep=slot):
                return
            self._paused.popleft()
            slot.job = job
        while self._queue:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            req, tokens = self._queue[0]
            slot, reuse = self._place(tokens, free)
            reserve = min(ADMIT_RESERVE, self.seq_ctx - len(tokens))
            if not self._make_room(len(tokens) - reuse + reserve, keep=slot):
                return  # the pool is full: wait, in order, for running sequences to finish
            self._queue.popleft()
            try:
                sampler = SlotSampler(self.model, req.sampling, req.grammar, n_ctx=self.seq_ctx)
            except EngineInputError as e:
                out.append(Failure(req.id, "input", e.message))
                continue
            window = penalty_window(req.sampling, self.seq_ctx)
            sampler.accept_prompt(tokens[max(0, len(tokens) - window):] if window else [])
            limit = req.sampling.num_predict if req.sampling.num_predict > 0 else None
            if limit is None and req.shift and req.sampling.num_predict != -2:
                limit = 10 * self.seq_ctx  # a shifting context never fills: Ollama's bound
            self._counter += 1
            slot.job = _Job(req, tokens, sampler, order=self._counter, reused=reuse, limit=limit)
            if req.images:
                try:
                    self._evaluate_images(slot)
                except EngineInputError as e:
                    out.append(Failure(req.id, "input", e.message))
                    self._drop(slot)
                    self._release(slot)

    def _pause_youngest(self, running: list[_Slot]) -> _Slot | None:
        """Free the cells of the most recently admitted running sequence; it resumes later by
        recomputing its tokens. Returns the paused slot, None when only one sequence runs."""
        # A sequence with images cannot be recomputed from its token list (its image cells have
        # no token ids), so it is never the one paused.
        pausable = [s for s in running if not s.job.req.images]
        if len(running) < 2 or not pausable:
            return None
        slot = max(pausable, key=lambda s: s.job.order)
        job = slot.job
        # A generating sequence: what it had evaluated, plus the sampled token not yet decoded;
        # evaluating them again yields the logits to sample its next token from. One still
        # reading its prompt starts that prompt again.
        if job.generating:
            job.feed = list(slot.cached) + [job.last]
        job.generating = False
        job.pauses += 1
        self._pauses += 1
        running.remove(slot)
        slot.job = None
        self._drop(slot)
        self._paused.appendleft(job)
        log.info("KV pool full: paused request %s after %d tokens", job.req.id, len(job.feed))
        return slot

    # -- one decode ----------------------------------------------------------------------------

    def _generate(self, out: list[Outbound]) -> None:
        running = [s for s in self._slots if s.job]
        if not running:
            return
        if (self.drafter is not None and len(running) == 1 and not self._queue and not self._paused
                and self._speculate(running[0], out)):
            return
        # Every generating sequence needs one cell this step; pause the youngest until they fit.
        while not self._make_room(sum(1 for s in running if s.job.generating)):
            if self._pause_youngest(running) is None:
                break
        generating = [s for s in running if s.job.generating]
        reading = sorted((s for s in running if not s.job.generating), key=lambda s: s.job.order)
        rows = self.decode_rows or max(len(generating), 1)
        groups = [generating[i:i + rows] for i in range(0, len(generating), rows)] or [[]]
        for i, group in enumerate(groups):  # prompts go with the last group
            if not self._decode(group, reading if i == len(groups) - 1 else [], out):
                return

    def _decode(self, generating: list[_Slot], reading: list[_Slot], out: list[Outbound]) -> bool:
        """One llama_decode: a token of each generating sequence, then prompt chunks as far as the
        batch and the pool have room; then each sequence whose logits came out samples. False
        when the decode failed (its requests are failed)."""
        batch = self._batch
        batch.clear()
        free = self.pool - self._cells()
        for slot in generating:  # generating sequences first: one token each, every step
            job = slot.job
            job.chunk = [job.last]
            job.index = batch.add(job.chunk, len(slot.cached), slot.seq)
            free -= 1
        for slot in reading:
            job = slot.job
            job.chunk, job.index = [], -1
            room = min(batch.room, free)
            if room <= 0:
                continue
            fed = len(slot.cached)
            job.chunk = job.feed[fed: fed + room]
            free -= len(job.chunk)
            finishing = fed + len(job.chunk) == len(job.feed)
            index = batch.add(job.chunk, fed, slot.seq, output="last" if finishing else "none")
            job.index = index if finishing else -1
        if batch.n_tokens == 0:
            return True
        running = generating + reading
        started = time.monotonic_ns()
        rc = self.ctx.decode(batch)
        if rc != 0:
            self._fail_batch(running, rc, out)
            return False
        decoded = time.monotonic_ns() - started
        for slot in running:
            job = slot.job
            if not job.chunk:
                continue
            slot.cached.extend(job.chunk)
            self._ledger.append(slot.seq, len(job.chunk))
            if job.generating:
                job.eval_ns += decoded
            else:
                job.prompt_ns += decoded
        for slot in running:
            job = slot.job
            if job.index < 0:
                continue
            t0 = time.monotonic_ns()
            token = job.sampler.sample(self.ctx, job.index)
            if job.req.logprobs and not self.model.is_eog(token):
                job.logprobs.append(token_logprob(self.ctx, job.index, self.model.n_vocab, token,
                                                  job.req.top_logprobs,
                                                  self._special if job.req.render_special else self._piece))
            job.index = -1
            job.eval_ns += time.monotonic_ns() - t0
            self._advance(slot, token, out)
        return True

    def _speculate(self, slot: _Slot, out: list[Outbound]) -> bool:
        """One draft-and-verify round for a lone generating sequence; False when it does not
        speculate (not greedy, too close to its limits, or no proposal), to decode plainly."""
        job = slot.job
        if (not job.generating or not speculates(job.req.sampling, job.req.grammar)
                or getattr(job.req, "logprobs", False) or min(slot.cached, default=0) < 0):
            return False  # images' cells (negative ids) mean nothing to the draft model
        n = min(self.n_draft, self.seq_ctx - len(slot.cached) - 2, self._batch.capacity - 1,
                (job.limit - job.n_out - 1) if job.limit is not None else self.n_draft)
        if n <= 0 or not self._make_room(n + 1):
            return False
        started = time.monotonic_ns()
        proposed = self.drafter.propose(slot.cached + [job.last], n)
        tokens = verify(self.ctx, self._batch, self.drafter.target_greedy, slot.seq, len(slot.cached),
                        job.last, proposed) if proposed else None
        job.eval_ns += time.monotonic_ns() - started
        if tokens is None:
            return False
        decoded = [job.last] + tokens[:-1]  # in the KV now; the last accepted token is not yet
        for i, token in enumerate(tokens):
            slot.cached.append(decoded[i])
            self._ledger.append(slot.seq, 1)
            self._advance(slot, token, out)
            if slot.job is None:  # finished early: the KV holds the tokens after it, cut them
                self.ctx.seq_rm(slot.seq, len(slot.cached), -1)
                break
        return True

    def _advance(self, slot: _Slot, token: int, out: list[Outbound]) -> None:
        job = slot.job
        job.generating = True
        job.n_out += 1
        if self.model.is_eog(token):
            self._finish(slot, "stop", "", out)
            return
        text = job.stops.push(job.decoder.decode(self.model.token_to_piece(token, special=job.req.render_special)))
        if job.stops.stopped:
            self._finish(slot, "stop", text, out)
        elif job.limit is not None and job.n_out >= job.limit:
            self._finish(slot, "length", text, out)
        elif len(slot.cached) >= self.seq_ctx and not self._shift(slot, token):  # no room to decode it
            self._finish(slot, "length", text, out)
        else:
            job.last = token
            if text:
                out.append(self._chunk(job, text))

    def _piece(self, token: int) -> bytes:
        return self.model.token_to_piece(token)

    def _special(self, token: int) -> bytes:
        return self.model.token_to_piece(token, special=True)

    def _chunk(self, job: _Job, text: str) -> Chunk:
        """A chunk of `text` with the log-probabilities of the tokens it releases, if asked."""
        if not job.logprobs:
            return Chunk(job.req.id, text)
        entries, job.logprobs = tuple(job.logprobs), []
        return Chunk(job.req.id, text, entries)

    def _shift(self, slot: _Slot, token: int) -> bool:
        """Make room in a full sequence as Ollama's runner does: keep the first num_keep tokens
        (and the BOS), discard half of the rest, and move what follows down. False when the
        request asked not to shift (or to fill the context), or nothing can be discarded."""
        job = slot.job
        if not job.req.shift or job.req.sampling.num_predict == -2:
            return False
        num_keep = job.req.sampling.num_keep
        keep = min(len(job.prompt) if num_keep < 0 else num_keep + (1 if self.model.add_bos else 0),
                   self.seq_ctx - 1)
        discard = (len(slot.cached) - keep) // 2
        if discard <= 0:
            return False
        # In place when the cells that move are this sequence's alone: moving a cell moves it for
        # every sequence that sees it, and a prefix shared with others must stay where it is.
        if self.ctx.can_shift and self._ledger.private(slot.seq, keep + discard):
            if self.ctx.seq_rm(slot.seq, keep, keep + discard):
                self.ctx.seq_add(slot.seq, keep + discard, -1, -discard)
                self._ledger.remove(slot.seq, keep, keep + discard)
                del slot.cached[keep: keep + discard]
                job.shifts += 1
                log.info("context full: request %s discarded %d tokens after the first %d and shifted the rest",
                         job.req.id, discard, keep)
                return True
        if min(slot.cached, default=0) < 0:
            return False  # image cells have no token ids to recompute them from
        # Otherwise the kept tokens after the gap are evaluated again, as a paused sequence is.
        job.feed = slot.cached[:keep] + slot.cached[keep + discard:] + [token]
        self._trim(slot, keep)
        job.generating = False
        job.recomputed_shifts += 1
        log.info("context full: request %s discarded %d tokens after the first %d and recomputes the rest",
                 job.req.id, discard, keep)
        return True

    def _finish(self, slot: _Slot, reason: str, text: str, out: list[Outbound]) -> None:
        job = slot.job
        if not job.stops.stopped:  # the stream ended: nothing held back can still be a stop
            text += job.stops.push(job.decoder.flush())
            text += job.stops.flush()
        elif job.logprobs:  # the tokens of the stop string itself are not part of the answer
            job.logprobs = _within(job.logprobs, len(text))
        if text or job.logprobs:
            out.append(self._chunk(job, text))
        out.append(Final(
            id=job.req.id, done_reason=reason,  # type: ignore[arg-type]
            prompt_eval_count=len(job.prompt) - job.reused, prompt_eval_duration=job.prompt_ns,
            eval_count=job.n_out, eval_duration=job.eval_ns, prompt_tokens_cached=job.reused,
            pauses=job.pauses, stop_sequence=job.stops.matched, shifts=job.shifts,
            recomputed_shifts=job.recomputed_shifts))
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        slot.job.sampler.close()
        slot.job = None
        self._counter += 1
        slot.last_used = self._counter
        if not self.prefix_cache:
            # Nothing will reuse its cells, and cells in use, even idle ones, cost every other
            # sequence's attention a scan (CPU_DECODE_ROWS).
            self._drop(slot)

    def _fail_batch(self, running: list[_Slot], rc: int, out: list[Outbound]) -> None:
        log.error("llama_decode failed with code %d; failing the %d requests in the batch", rc, len(running))
        for slot in running:
            if not slot.job.chunk:
                continue
            out.append(Failure(slot.job.req.id, "internal", f"llama_decode failed with code {rc}"))
            # After an abort or a fatal error part of the batch may be in the KV: start afresh.
            self._drop(slot)
            self._release(slot)


def _within(entries: list[TokenLogprob], length: int) -> list[TokenLogprob]:
    """The leading entries whose text fits in `length` characters (those before a stop string)."""
    kept, used = [], 0
    for entry in entries:
        used += len(entry.token)
        if used > length:
            break
        kept.append(entry)
    return kept


@dataclass
class _EmbedJob:
    req: EmbedRequest
    inputs: list[list[int]]
    vectors: list[list[float]] = field(default_factory=list)
    scheduled: int = 0  # inputs handed to a decode so far
    started: int = 0  # monotonic ns of its first decode


class EmbedBatcher:
    """Embedding requests, packed several inputs per decode on a lazily made embeddings context."""

    def __init__(self, model: Model, make_context: Callable[[], Context], *, limit: int) -> None:
        self.model = model
        self.limit = limit  # tokens per input: the context, the batch and the ubatch all hold one
        self._make_context = make_context
        self._threads: int | None = None  # set by the worker's core sharing; None: the context's own
        self._ctx: Context | None = None
        self._batch: Batch | None = None
        self._jobs: deque[_EmbedJob] = deque()

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def submit(self, req: EmbedRequest) -> list[Outbound]:
        """Queue a request, or return its immediate answer (a failure, or no inputs at all)."""
        inputs: list[list[int]] = []
        for i, text in enumerate(req.inputs):
            tokens = self.model.tokenize(text, add_special=True, parse_special=False)
            if not tokens:
                return [Failure(req.id, "input", f"input {i} is empty")]
            if len(tokens) > self.limit:
                if not req.truncate:
                    return [Failure(req.id, "context", overflow_message(f"input {i}", len(tokens), self.limit))]
                tokens = tokens[: self.limit]
            inputs.append(tokens)
        if not inputs:
            return [Embeddings(req.id, (), 0, 0)]
        self._jobs.append(_EmbedJob(req, inputs))
        return []

    def cancel(self, request_id: str) -> None:
        self._jobs = deque(j for j in self._jobs if j.req.id != request_id)

    @property
    def n_threads(self) -> int | None:
        """The embeddings context's threads; None before its first request made it."""
        return self._ctx.n_threads if self._ctx is not None else None

    def set_threads(self, n: int) -> None:
        """The worker's share of the cores, for this context too (made lazily: applied then)."""
        self._threads = n
        if self._ctx is not None:
            self._ctx.set_threads(n)

    def step(self, out: list[Outbound]) -> None:
        """One decode over as many queued inputs as fit; finished requests go to `out`."""
        if self._ctx is None:
            self._ctx = self._make_context()
            self._batch = Batch(self._ctx.n_batch)
            if self._threads is not None:
                self._ctx.set_threads(self._threads)
        ctx, batch = self._ctx, self._batch
        batch.clear()
        placed: list[_EmbedJob] = []  # the job of each sequence id, in order
        for job in self._jobs:
            while job.scheduled < len(job.inputs) and len(placed) < ctx.n_seq_max:
                tokens = job.inputs[job.scheduled]
                if len(tokens) > batch.room:
                    break
                batch.add(tokens, 0, len(placed), output="all")
                placed.append(job)
                job.scheduled += 1
                job.started = job.started or time.monotonic_ns()
            if len(placed) == ctx.n_seq_max or job.scheduled < len(job.inputs):
                break
        rc = ctx.decode(batch)
        if rc != 0:
            ctx.clear()
            for job in dict.fromkeys(placed):
                out.append(Failure(job.req.id, "internal", f"llama_decode failed with code {rc}"))
                self.cancel(job.req.id)
            return
        for seq, job in enumerate(placed):
            vector = ctx.sequence_embedding(seq)
            if job.req.normalize:
                norm = math.sqrt(sum(x * x for x in vector))
                vector = [x / norm for x in vector] if norm > 0 else vector
            job.vectors.append(vector)
        ctx.clear()  # every decode starts from empty sequences
        while self._jobs and len(self._jobs[0].vectors) == len(self._jobs[0].inputs):
            job = self._jobs.popleft()
            out.append(Embeddings(job.req.id, tuple(tuple(v) for v in job.vectors),
                                  prompt_eval_count=sum(len(t) for t in job.inputs),
                                  duration=time.monotonic_ns() - job.started))

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
        if self._ctx is not None:
            self._ctx.close()
