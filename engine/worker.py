"""The model worker process, and the messages it exchanges with its `Engine`.

One worker per loaded model, started with multiprocessing's 'spawn' context so that it shares
nothing with the server but the pipe. It loads the weights, answers `Loaded` (or `LoadFailed`
with llama.cpp's reason), then runs the batching loop:

    idle     -> block on the pipe until a request arrives
    busy     -> take every message already waiting (requests, cancels), run one step, send its
                messages to the parent as one list, repeat

So a decode never waits on the pipe, a cancel takes effect before the next step, and the parent
gets one pipe message per step however many requests are streaming. A crash in native code kills
only this process; the engine notices the closed pipe and fails the requests that were in it.

Parent to worker: GenerateRequest, EmbedRequest, Cancel, Tokenize, Shutdown.
Worker to parent: Loaded | LoadFailed first, then lists of Chunk, Final, Embeddings, Failure,
Tokens and PoolReport, and `[Heartbeat()]` from the heartbeat thread every `heartbeat_s` (the engine kills a
worker it hears nothing from for its stall timeout; see process.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from corral.compiler.spec import RuntimeSpec
from corral.engine.cores import Seat, threads_for
from corral.engine.errors import EngineError
from corral.engine.requests import EmbedRequest, GenerateRequest

log = logging.getLogger(__name__)

# Embedding inputs packed into one decode at most (distinct sequence ids of the embeddings context).
EMBED_SEQUENCES = 16
# Tokens a DRAFT model proposes per round unless draft_num_predict says otherwise.
DRAFT_NUM_PREDICT = 4


@dataclass(frozen=True, slots=True)
class Cancel:
    id: str


@dataclass(frozen=True, slots=True)
class Tokenize:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Tokens:
    id: str
    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The worker process is alive (sent by its own thread, so a long decode still beats)."""


@dataclass(frozen=True, slots=True)
class PoolReport:
    """The KV pool's use (BatchLoop.stats, in builtins so the server need not import llama.cpp):
    sent with a step's messages at most every REPORT_S while busy, and once on going idle."""

    pool_cells: int
    used_cells: int
    running: int
    queued: int


# How often a busy worker reports its pool at most: metrics need no more, and a report is a few
# bytes added to a message the step sends anyway.
REPORT_S = 0.25


@dataclass(frozen=True, slots=True)
class Loaded:
    load_duration_ns: int
    slot_ctx: int  # tokens one request may hold (prompt and output)


@dataclass(frozen=True, slots=True)
class LoadFailed:
    message: str


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    spec: RuntimeSpec
    n_slots: int
    extra_buffers: bool = True  # llama.cpp's repacked CPU weights; see Engine._spawn
    omp_wait_policy: str | None = None  # OMP_WAIT_POLICY for this worker (CORRAL_OMP_WAIT_POLICY)
    heartbeat_s: float = 1.0  # how often the heartbeat thread tells the parent this process lives
    seat: Seat | None = None  # this worker's seat on the server's core board (engine/cores.py)
    prefix_cache: bool = True  # share cached prompt prefixes between sequences (batching.py)


def run(conn: Connection, config: WorkerConfig) -> None:
    """Process main: load, report, serve until Shutdown or until the parent goes away."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # llama.cpp's CPU threads meet at an OpenMP barrier after every graph node, and libgomp spins
    # there by default. For one model on its cores that is the fast choice (bench/throughput.py:
    # 88 tok/s against 31 with sleeping waits on 2 cores); several busy workers on the same cores
    # spin against each other, and OMP_WAIT_POLICY=PASSIVE in the server's environment (which the
    # workers inherit) is then the better setting. CORRAL_OMP_WAIT_POLICY (Settings.omp_wait_policy,
    # passed in the config) sets it for workers only.
    if config.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = config.omp_wait_policy
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING,
                            format="%(asctime)s %(levelname)s corral-worker[%(process)d] %(name)s: %(message)s")
    started = time.monotonic_ns()
    try:
        worker = _Worker(conn, config)
    except EngineError as e:
        conn.send(LoadFailed(e.message))
        return
    except Exception as e:  # an unexpected failure still has to reach the parent as a load error
        log.exception("loading %s failed", config.spec.weights.path)
        conn.send(LoadFailed(f"{type(e).__name__}: {e}"))
        return
    conn.send(Loaded(time.monotonic_ns() - started, worker.slot_ctx))
    stop = threading.Event()
    threading.Thread(target=_beat, args=(worker, config.heartbeat_s, stop), name="corral-heartbeat",
                     daemon=True).start()
    try:
        worker.serve()
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone; nobody is left to answer
    finally:
        stop.set()
        worker.close()


def _beat(worker: "_Worker", interval: float, stop: threading.Event) -> None:
    """Heartbeat thread: llama_decode releases the GIL, so this beats through a long prompt
    evaluation; only a stopped or wedged process falls silent."""
    while not stop.wait(interval):
        try:
            worker.send([Heartbeat()])
        except (OSError, ValueError):
            return  # the parent is gone


class _Worker:
    def __init__(self, conn: Connection, config: WorkerConfig) -> None:
        # llama_cpp loads its shared library on import: only here, never in the server process.
        from corral.engine.batching import CPU_DECODE_ROWS, BatchLoop, EmbedBatcher
        from corral.engine.llama import Batch, Context, Model, default_threads

        self.conn = conn
        spec, load = config.spec, config.spec.load
        self.model = Model([w.path for w in spec.weight_files], load, extra_buffers=config.extra_buffers)
        self.model.load_adapters([a.path for a in spec.adapters])
        threads = load.num_thread or default_threads()
        self._cores, self._wanted = default_threads(), load.num_thread or None
        self._seat, self._threads = config.seat, threads
        n_slots = config.n_slots
        # One unified KV cache of the plan's cells, shared by up to n_slots sequences (the pool;
        # see batching.py). A non-unified cache would split it into fixed num_ctx streams.
        pool = max(spec.plan.n_ctx, load.num_ctx)
        self.ctx = Context(self.model, n_ctx=pool, n_batch=max(load.num_batch, n_slots),
                           n_seq_max=n_slots, n_threads=threads, unified=True)
        self.ctx.apply_adapters(self.model.adapters)
        self.slot_ctx = load.num_ctx
        self._warm_up(Batch)

        def embeddings_context() -> Context:
            ctx = Context(self.model, n_ctx=load.num_ctx, n_batch=load.num_ctx, n_ubatch=load.num_ctx,
                          n_seq_max=EMBED_SEQUENCES, n_threads=threads, unified=True, embeddings=True)
            ctx.apply_adapters(self.model.adapters)
            return ctx

        embedder = EmbedBatcher(self.model, embeddings_context, limit=load.num_ctx)
        self.vision = None
        if spec.projector is not None:  # the model sees images (engine/vision.py)
            from corral.engine.vision import Vision
            self.vision = Vision(spec.projector.path, self.model, use_gpu=spec.plan.backend == "cuda",
                                 n_threads=threads)
        self.batch_loop = BatchLoop(self.model, self.ctx, n_seqs=n_slots, seq_ctx=self.slot_ctx,
                                   pool=self.ctx.n_ctx, embedder=embedder, prefix_cache=config.prefix_cache,
                                   vision=self.vision)
        if spec.plan.n_gpu_layers == 0:  # see batching.CPU_DECODE_ROWS
            self.batch_loop.decode_rows = CPU_DECODE_ROWS
        self.draft_model = self._load_draft(spec, config, threads, Model, Context)
        self._replies: list[object] = []
        self._reported = 0.0  # monotonic time of the last PoolReport
        self._was_busy = False
        self._send_lock = threading.Lock()  # the serving loop and the heartbeat thread share the pipe

    def _load_draft(self, spec: RuntimeSpec, config: WorkerConfig, threads: int, model_type: type,
                    context_type: type) -> object | None:
        """The DRAFT model and its own one-sequence context, for speculative decoding; None
        without one (or with draft_num_predict 0)."""
        n_draft = int(spec.parameters.get("draft_num_predict", DRAFT_NUM_PREDICT))
        if spec.draft is None or n_draft <= 0:
            return None
        from corral.engine.speculative import Drafter

        load = spec.load
        draft = model_type(spec.draft.path, load, extra_buffers=config.extra_buffers)
        if draft.n_vocab != self.model.n_vocab:  # the compiler checked; the files may have changed since
            draft.close()
            raise EngineError(f"the DRAFT model has {draft.n_vocab} tokens, the model {self.model.n_vocab}")
        ctx = context_type(draft, n_ctx=load.num_ctx, n_batch=load.num_batch, n_seq_max=1, n_threads=threads,
                           unified=True)
        self.batch_loop.drafter = Drafter(draft, ctx, n_draft)
        self.batch_loop.n_draft = n_draft
        return draft

    def send(self, messages: list[object]) -> None:
        with self._send_lock:
            self.conn.send(messages)

    def _warm_up(self, batch_type: type) -> None:
        """One small decode at load time: pages the weights in, and crashes here rather than
        mid-request when the CPU's kernels cannot run on this machine. It takes several tokens:
        single-token decodes use other kernels (the AMX crash needs two or more)."""
        n = min(8, self.ctx.n_batch, self.slot_ctx)
        batch = batch_type(n)
        try:
            batch.add([self.model.bos if self.model.bos >= 0 else 0] * n, 0, 0)
            rc = self.ctx.decode(batch)
            if rc != 0:
                raise EngineError(f"llama.cpp could not run the model (llama_decode returned {rc})")
        finally:
            batch.close()
            self.ctx.seq_rm(0, -1, -1)

    def serve(self) -> None:
        batch_loop = self.batch_loop
        while True:
            if not batch_loop.busy and not self._replies:
                if self._seat is not None:
                    self._seat.idle()
                if not self._handle(self.conn.recv()):
                    return
            while self.conn.poll():
                if not self._handle(self.conn.recv()):
                    return
            self._share_cores()
            out = self._replies + batch_loop.step()
            self._replies = []
            self._report(out)
            if out:
                self.send(out)

    def _report(self, out: list[object]) -> None:
        """Add a PoolReport to this step's messages when one is due (see REPORT_S)."""
        busy, now = self.batch_loop.busy, time.monotonic()
        if (busy and now - self._reported >= REPORT_S) or (self._was_busy and not busy):
            stats = self.batch_loop.stats()
            out.append(PoolReport(stats.pool_cells, stats.used_cells, stats.running, stats.queued))
            self._reported = now
        self._was_busy = busy

    def _share_cores(self) -> None:
        """Take this worker's share of the cores among the busy workers (engine/cores.py)."""
        if self._seat is None:
            return
        busy, rank = self._seat.busy_step()
        threads = threads_for(self._cores, busy, rank, self._wanted)
        if threads != self._threads:
            # Every context of this worker: a busy embedding or draft context with all the cores
            # would oversubscribe them as two busy models did.
            self.batch_loop.set_threads(threads)
            self._threads = threads

    def _handle(self, message: object) -> bool:
        """Apply one message from the parent; False means stop serving."""
        if isinstance(message, GenerateRequest):
            self.batch_loop.submit(message)
        elif isinstance(message, EmbedRequest):
            self.batch_loop.submit_embed(message)
        elif isinstance(message, Cancel):
            self.batch_loop.cancel(message.id)
        elif isinstance(message, Tokenize):
            tokens = self.model.tokenize(message.text, add_special=False, parse_special=True)
            self._replies.append(Tokens(message.id, tuple(tokens)))
        elif isinstance(message, Shutdown):
            return False
        else:  # a bug on the parent's side; dying would take every stream down with it
            log.error("ignoring a message of unknown type %s", type(message).__name__)
        return True

    def close(self) -> None:
        self.batch_loop.close()
        self.ctx.close()
        self.model.close()
        if self.draft_model is not None:
            self.draft_model.close()
