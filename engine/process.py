"""`Engine`: the server's handle on one model, running in its own worker process.

The engine spawns the worker (worker.py), waits for it to load, and then multiplexes requests
over one pipe. A reader thread receives the worker's per-step message lists and hands them to the
event loop (`call_soon_threadsafe`), which routes each message to its request's asyncio queue.
Decoding never happens in the server process, so a stream never blocks the event loop.

Failures, by where they start:

- the worker cannot load the model          -> `start()` raises ModelLoadError (llama.cpp's reason)
- a request cannot run (prompt too long, bad grammar, empty prompt)
                                             -> that request raises ContextOverflowError or
                                                EngineInputError; the others go on
- the worker process dies (segfault, OOM kill, SIGKILL)
                                             -> every request in it raises WorkerCrashedError at
                                                once; the next request starts a fresh worker
- the worker hangs: nothing from it (no token, no heartbeat) for `stall_timeout` seconds
                                             -> the engine kills it, and it is reported as a death

The worker's heartbeat thread beats while its process runs, also while a long llama_decode holds
its main thread (ctypes releases the GIL): a slow prompt evaluation is alive, a stopped or wedged
process (SIGSTOP, a deadlock holding the GIL) is silent and is killed.

A consumer that stops early (breaks out, is cancelled, or calls `aclose()` on the generator)
sends a cancel to the worker straight away, and the worker frees the slot before its next step.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
import time
import uuid
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import AsyncIterator, ClassVar, Literal, Union

from corral.compiler.spec import RuntimeSpec
from corral.machine import facts as machine_facts
from corral.engine import worker
from corral.engine.cores import CoreBoard
from corral.engine.errors import ContextOverflowError, EngineError, EngineInputError, ModelLoadError, WorkerCrashedError
from corral.engine.requests import Chunk, Embeddings, EmbedRequest, Failure, Final, GenerateRequest

log = logging.getLogger(__name__)

# What a request's queue receives: the worker's replies, or an exception when the worker is gone.
_Reply = Union[Chunk, Final, Embeddings, Failure, worker.Tokens, BaseException]
_TERMINAL = (Final, Failure, Embeddings, worker.Tokens)
_SHUTDOWN_GRACE_S = 5.0
DEFAULT_STALL_TIMEOUT_S = 120.0  # Settings.worker_stall_timeout: generous for a slow CPU prompt eval
STOPPED = "the model's worker stopped"  # how every crash message starts, whatever the cause


def heartbeat_interval(stall_timeout: float) -> float:
    """How often a worker beats: several times within the stall timeout, at most once a second."""
    return max(0.05, min(1.0, stall_timeout / 4))


def describe_exit(code: int | None) -> str:
    """'signal SIGKILL', 'code 1': how a worker process ended."""
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def failure_error(failure: Failure) -> EngineError:
    """The exception a worker's Failure message stands for."""
    if failure.kind == "context":
        return ContextOverflowError(failure.message, hint="shorten the input or raise num_ctx")
    if failure.kind == "input":
        return EngineInputError(failure.message)
    return EngineError(failure.message)


class _LoadCrashed(Exception):
    """The worker died from a signal before it reported the model loaded."""


class Engine:
    """One model in one worker process, serving `n_slots` requests at a time."""

    # A fact about this machine, learnt once per server process: llama.cpp's repacked CPU
    # weights (AMX kernels) crash on virtual machines that advertise AMX without supporting it.
    _cpu_repack_crashes: ClassVar[bool] = False
    # The seats through which this server's busy workers share the cores (engine/cores.py).
    _core_board: ClassVar[CoreBoard | None] = None

    def __init__(self, spec: RuntimeSpec, *, n_slots: int | None = None, omp_wait_policy: str | None = None,
                 cpu_repack: Literal["on", "off"] | None = None,
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT_S, prefix_cache: bool = True) -> None:
        if stall_timeout <= 0:
            raise ValueError(f"the stall timeout must be positive, not {stall_timeout}")
        self._spec = spec
        self._stall_timeout = stall_timeout
        self._omp_wait_policy = omp_wait_policy  # the worker's OMP_WAIT_POLICY (Settings.omp_wait_policy)
        self._prefix_cache = prefix_cache  # share cached prompt prefixes (Settings.prefix_cache)
        self._cpu_repack = cpu_repack  # on/off forces repacked CPU weights; None: as learnt (Settings.cpu_repack)
        self._n_slots = n_slots if n_slots is not None else (spec.plan.max_sequences or spec.load.num_parallel)
        if self._n_slots < 1:
            raise ValueError(f"an engine needs at least one slot, not {self._n_slots}")
        self.load_duration_ns = 0
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._start_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._incarnation = 0  # which worker process a request was sent to
        self._waiters: dict[str, tuple[int, asyncio.Queue[_Reply]]] = {}
        self._closed = False
        self._seat: int | None = None  # this engine's seat on the core board
        self.crashes = 0  # worker deaths and hangs since the engine was made (read by the scheduler)
        self._stalled: set[int] = set()  # incarnations the watchdog killed for silence
        self.pool_stats: worker.PoolReport | None = None  # the worker's latest report (for metrics)

    @property
    def spec(self) -> RuntimeSpec:
        return self._spec

    @property
    def n_slots(self) -> int:
        return self._n_slots

    @property
    def alive(self) -> bool:
        """Whether the worker process is running (False before start, after close or a crash)."""
        return self._proc is not None and self._proc.is_alive()

    @property
    def in_flight(self) -> int:
        """Requests sent to the worker and not finished (queued ones included)."""
        return len(self._waiters)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.alive else None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the worker and wait until the model is loaded; a no-op while it is running.

        Raises ModelLoadError with llama.cpp's reason when the model cannot be loaded.
        """
        if self._closed:
            raise EngineError(f"the engine for {self._spec.name} is closed")
        if self.alive:
            return
        async with self._start_lock:
            if self.alive:
                return
            self._loop = asyncio.get_running_loop()
            extra_buffers = not (Engine._cpu_repack_crashes or machine_facts.repack_crashes(self._cpu_repack))
            try:
                await self._spawn(extra_buffers)
            except _LoadCrashed as e:
                if not extra_buffers:
                    raise ModelLoadError(f"the model worker for {self._spec.name} crashed while loading: {e}") from None
                log.warning("the model worker for %s crashed while loading (%s); retrying without "
                            "llama.cpp's repacked CPU weights (AMX), which crash on some virtual machines",
                            self._spec.name, e)
                try:
                    await self._spawn(False)
                except _LoadCrashed as again:
                    raise ModelLoadError(
                        f"the model worker for {self._spec.name} crashed while loading: {again}") from None
                Engine._cpu_repack_crashes = True  # only now is it clear what crashed
                machine_facts.remember_repack_crashes()

    async def _spawn(self, extra_buffers: bool) -> None:
        context = multiprocessing.get_context("spawn")
        conn, child_conn = context.Pipe()
        if Engine._core_board is None:
            Engine._core_board = CoreBoard()
        if self._seat is None:
            self._seat = Engine._core_board.claim()
        config = worker.WorkerConfig(self._spec, self._n_slots, extra_buffers, self._omp_wait_policy,
                                     heartbeat_interval(self._stall_timeout),
                                     seat=Engine._core_board.seat(self._seat), prefix_cache=self._prefix_cache)
        proc = context.Process(target=worker.run, args=(child_conn, config), daemon=True,
                               name=f"corral-worker:{self._spec.name}")
        try:
            await asyncio.to_thread(proc.start)
            child_conn.close()  # only the child may hold it, or its death would not close the pipe
            reply = await asyncio.to_thread(_first_reply, conn)
        except BaseException:  # cancelled while loading: do not leave a half-started worker
            _kill(proc)
            conn.close()
            raise
        if isinstance(reply, worker.Loaded):
            self.load_duration_ns = reply.load_duration_ns
            self._proc, self._conn = proc, conn
            self._incarnation += 1
            threading.Thread(target=self._read, args=(conn, proc, self._incarnation, self._loop),
                             name=f"corral-reader:{self._spec.name}", daemon=True).start()
            return
        await asyncio.to_thread(proc.join, _SHUTDOWN_GRACE_S)
        _kill(proc)
        conn.close()
        if isinstance(reply, worker.LoadFailed):
            raise ModelLoadError(reply.message)
        if proc.exitcode is not None and proc.exitcode < 0:
            raise _LoadCrashed(f"it exited with {describe_exit(proc.exitcode)}")
        raise ModelLoadError(f"the model worker for {self._spec.name} exited with "
                             f"{describe_exit(proc.exitcode)} while loading")

    async def close(self) -> None:
        """Stop the worker: ask it to finish, kill it if it does not. In-flight requests fail."""
        self._closed = True
        if self._seat is not None and Engine._core_board is not None:
            Engine._core_board.release(self._seat)
            self._seat = None
        proc = self._proc
        if proc is None:
            return
        if proc.is_alive():
            try:
                self._send(worker.Shutdown())
            except EngineError:
                pass
            await asyncio.to_thread(proc.join, _SHUTDOWN_GRACE_S)
            if proc.is_alive():
                log.warning("the model worker for %s did not stop; killing it", self._spec.name)
                await asyncio.to_thread(_kill, proc)
        self._fail_waiters(self._incarnation, proc.exitcode)

    # -- requests ------------------------------------------------------------------------------

    async def generate(self, req: GenerateRequest) -> AsyncIterator[Chunk | Final]:
        """Stream a generation: Chunks, then one Final. Stopping early cancels it in the worker."""
        queue = await self._submit(req)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Chunk):
                    yield item
                elif isinstance(item, Final):
                    yield item
                    return
                else:
                    raise _as_error(item)
        finally:
            self._abandon(req.id)

    async def embed(self, req: EmbedRequest) -> Embeddings:
        """One vector per input (L2-normalized when the request asks)."""
        queue = await self._submit(req)
        try:
            item = await queue.get()
        finally:
            self._abandon(req.id)
        if isinstance(item, Embeddings):
            return item
        raise _as_error(item)

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as a prompt is tokenized (control-token text parsed; no BOS added)."""
        request_id = f"tokenize-{uuid.uuid4().hex}"
        queue = await self._submit(worker.Tokenize(request_id, text))
        try:
            item = await queue.get()
        finally:
            self._abandon(request_id)
        if isinstance(item, worker.Tokens):
            return list(item.tokens)
        raise _as_error(item)

    async def _submit(self, message: GenerateRequest | EmbedRequest | worker.Tokenize) -> asyncio.Queue[_Reply]:
        await self.start()  # after a crash, this is where the next request restarts the worker
        if message.id in self._waiters:
            raise EngineInputError(f"a request with id {message.id!r} is already in flight")
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        self._waiters[message.id] = (self._incarnation, queue)
        try:
            self._send(message)
        except BaseException:
            self._waiters.pop(message.id, None)
            raise
        return queue

    def _abandon(self, request_id: str) -> None:
        """The caller is done with a request; if the worker is not, tell it to stop."""
        if self._waiters.pop(request_id, None) is None:
            return  # finished (or failed) already
        try:
            self._send(worker.Cancel(request_id))
        except EngineError:
            pass  # the worker is gone, and the request with it

    def _send(self, message: object) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            raise WorkerCrashedError(f"the model worker for {self._spec.name} is not running")
        with self._send_lock:
            try:
                conn.send(message)
            except (OSError, ValueError) as e:
                raise WorkerCrashedError(f"the model worker for {self._spec.name} is gone: {e}") from e

    # -- worker messages -----------------------------------------------------------------------

    def _read(self, conn: Connection, proc: BaseProcess, incarnation: int, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: forward the worker's message lists to the loop until the pipe closes;
        kill the worker when it has been silent (not even a heartbeat) for the stall timeout."""
        heard = time.monotonic()
        try:
            while True:
                if not conn.poll(heartbeat_interval(self._stall_timeout)):
                    silent = time.monotonic() - heard
                    if silent >= self._stall_timeout and proc.is_alive():
                        log.error("the model worker for %s sent nothing for %.1f s; killing it as hung",
                                  self._spec.name, silent)
                        self._stalled.add(incarnation)
                        proc.kill()
                    continue
                messages = conn.recv()
                heard = time.monotonic()
                reports = [m for m in messages if isinstance(m, worker.PoolReport)]
                if reports:
                    self.pool_stats = reports[-1]
                messages = [m for m in messages if not isinstance(m, (worker.Heartbeat, worker.PoolReport))]
                if messages:
                    loop.call_soon_threadsafe(self._dispatch, messages)
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
        proc.join(_SHUTDOWN_GRACE_S)
        try:
            loop.call_soon_threadsafe(self._worker_gone, incarnation, proc.exitcode)
        except RuntimeError:
            pass  # the event loop is closed: nobody is waiting any more

    def _dispatch(self, messages: list[_Reply]) -> None:
        for message in messages:
            entry = self._waiters.get(message.id)
            if entry is None:
                continue  # cancelled by its caller; the worker had not seen the cancel yet
            if isinstance(message, _TERMINAL):
                del self._waiters[message.id]
            entry[1].put_nowait(message)

    def _death(self, incarnation: int, exitcode: int | None) -> str:
        if incarnation in self._stalled:
            return f"made no progress for {self._stall_timeout:g} s and was killed"
        return f"exited with {describe_exit(exitcode)}"

    def _worker_gone(self, incarnation: int, exitcode: int | None) -> None:
        """The reader saw the worker of `incarnation` end: count it unless it was asked to stop."""
        if not self._closed and incarnation == self._incarnation:
            self.crashes += 1
            if not self._waiters:
                log.error("%s: %s %s while idle", STOPPED, self._spec.name, self._death(incarnation, exitcode))
        self._fail_waiters(incarnation, exitcode)

    def _fail_waiters(self, incarnation: int, exitcode: int | None) -> None:
        """The worker of `incarnation` is gone: fail the requests that were in it."""
        victims = [rid for rid, (inc, _) in self._waiters.items() if inc == incarnation]
        if not victims:
            return
        if self._closed:
            make = lambda: EngineError(f"the engine for {self._spec.name} was closed")  # noqa: E731
        else:
            reason = f"{STOPPED}: {self._spec.name} {self._death(incarnation, exitcode)}"
            log.error("%s; failing %d requests", reason, len(victims))
            make = lambda: WorkerCrashedError(reason)  # noqa: E731
        for rid in victims:
            _, queue = self._waiters.pop(rid)
            queue.put_nowait(make())


def _first_reply(conn: Connection) -> worker.Loaded | worker.LoadFailed | None:
    """The worker's first message; None when it died first (the pipe closed)."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def _kill(proc: BaseProcess) -> None:
    if proc.pid is None:  # never started
        return
    if proc.is_alive():
        proc.kill()
    proc.join(_SHUTDOWN_GRACE_S)


def _as_error(item: object) -> BaseException:
    if isinstance(item, BaseException):
        return item
    if isinstance(item, Failure):
        return failure_error(item)
    return EngineError(f"unexpected message from the model worker: {type(item).__name__}")
