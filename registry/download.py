"""Downloading one blob into the store: parallel ranged parts, resumable, verified before it enters.

A blob is cut into parts (`Range: bytes=a-b`, corral.registry.partial) and written in place with
pwrite, so memory stays flat whatever the size. While the bytes arrive fast
(TransferOptions.fast_stream) one stream reads the untouched parts in order with one request;
each half second slower than that lets one more thread take the next part, up to `parallel`, and
the stream stops at the end of its part once the next one is taken. Bodies are read through
corral.registry.rawhttp: one recv of up to 1 MiB a read, written as it came. The sidecar is saved
twenty times a second while bytes move and whenever the download stops (an error, Ctrl-C, a cancel),
always after the bytes it claims were written, so a dropped connection is retried from where it
broke and a pull started again fetches only what is missing. A part that fails is retried with
exponential backoff; any progress resets its count. A registry that ignores Range gets one
sequential download from the start.

The threads that receive only receive and write; a hash thread follows the bytes contiguous from
the start, reading them back from the page cache (what is hashed is what lies in the file, for
~0.05 s/GB of copying), so on two cores hashing runs beside receiving instead of after it.
`PartialBlob.commit` then hashes whatever is left and renames the file into blobs/ only if the
sha256 matches.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterator

import httpx

from corral.registry.client import RegistryClient, Response
from corral.registry.errors import BlobTransferError, RegistryUnreachableError, TransferCancelledError
from corral.registry.options import TransferOptions
from corral.registry.partial import Part, PartialBlob, plan_parts
from corral.registry.rawhttp import READ_SIZE, RawResponse

__all__ = ["BlobDownload", "Part", "PartialBlob", "TransferOptions", "plan_parts"]

log = logging.getLogger(__name__)

TICK = 0.05  # seconds between the main thread's rounds: sidecar saves and write-back hints
SAVE_EVERY = 0.05  # seconds between sidecar saves while bytes move (a killed pull loses what came after)
HASH_AHEAD = 16 << 20  # the most bytes the hash thread takes at a time (then it looks again)
HASH_BATCH = 1 << 20  # while bytes still arrive, the hash thread waits until this many are new
RAMP_WINDOW = 0.5  # seconds over which a download's speed is judged before another part joins


class _Retry(Exception):
    """A part stopped early in a way worth trying again (a drop, a short body, a 5xx)."""


class _NoRanges(Exception):
    """The registry answered a ranged request with the whole blob."""


class BlobDownload:
    """Fetches the missing parts of one PartialBlob through a RegistryClient."""

    def __init__(self, client: RegistryClient, partial: PartialBlob, options: TransferOptions,
                 cancel: threading.Event | None = None):
        self.client = client
        self.partial = partial
        self.options = options
        self.cancel = cancel or threading.Event()
        self.downloaded = 0  # bytes received in this run (resumed bytes not counted)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open: set[Response] = set()
        self._pending: deque[Part] = deque()  # parts no thread has taken, in order (under _lock)
        self._width = 1  # parts fetched at once now (set by the main thread, read by the workers)

    def run(self, on_progress: Callable[[int], None]) -> None:
        """Fetch every missing byte; `on_progress(completed)` runs on this thread, every `interval`."""
        try:
            self._run_parts(on_progress)
        except _NoRanges:
            self.partial.parts = [Part(0, self.partial.size)]  # start over, in one piece
            self.partial.restart_hash()
            self._stop.clear()
            self._run_parts(on_progress)

    def _run_parts(self, on_progress: Callable[[int], None]) -> None:
        pending = self._pending = deque(p for p in self.partial.parts if p.remaining > 0)
        if not pending:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.options.parallel, len(pending)), thread_name_prefix="corral-pull")
        futures: set[Future[None]] = set()
        self._width = width = 1 if self.options.fast_stream > 0 else self.options.parallel  # parts wanted at once
        finished = threading.Event()
        hasher = threading.Thread(target=self._hash_behind, args=(finished,), name="corral-hash", daemon=True)
        hasher.start()
        last, saved = -1, time.monotonic()
        reported = window = saved
        window_bytes = self.downloaded
        try:
            while futures or pending:
                with self._lock:
                    while pending and len(futures) < width:  # in order: the hash front first
                        futures.add(pool.submit(self._fetch_part, pending.popleft()))
                done, futures = wait(futures, timeout=min(TICK, self.options.interval), return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()
                if self.cancel.is_set():
                    raise TransferCancelledError("pull")
                now = time.monotonic()
                if now - window >= RAMP_WINDOW:
                    speed = (self.downloaded - window_bytes) / (now - window)
                    if speed < self.options.fast_stream and width < self.options.parallel:
                        self._width = width = width + 1
                        log.debug("%s: %.0f MB/s, %d parts at once now", self.partial.digest.short, speed / 1e6, width)
                    window, window_bytes = now, self.downloaded
                with self._lock:
                    completed = self.partial.completed
                    if done or time.monotonic() - saved >= SAVE_EVERY:
                        self.partial.save()
                        saved = time.monotonic()
                self.partial.write_back()
                if completed != last and (done or now - reported >= self.options.interval):
                    on_progress(completed)
                    last, reported = completed, now
        except BaseException:
            self._stop.set()
            with self._lock:
                for resp in list(self._open):
                    _hang_up(resp)  # wakes a worker blocked in a read
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            finished.set()
            hasher.join()
            with self._lock:
                self.partial.save()

    def _hash_behind(self, finished: threading.Event) -> None:
        """Hash the bytes contiguous from the start as they arrive, so verifying overlaps downloading."""
        while not self._stop.is_set():
            with self._lock:
                end = self.partial.contiguous()
            ahead = end - self.partial.hashed
            if ahead >= HASH_BATCH or (ahead > 0 and finished.is_set()):
                self.partial.hash_to(end, budget=HASH_AHEAD)
            elif finished.is_set():
                return
            else:
                finished.wait(0.005)

    def _fetch_part(self, part: Part) -> None:
        """Fetch `part` (and, while it is the only stream, the untouched parts after it), retrying drops."""
        cursor = [part]  # the part the stream is in; _stream moves it on across a span
        failures = 0
        while cursor[0].remaining > 0 and not (self._stop.is_set() or self.cancel.is_set()):
            before, done = cursor[0], cursor[0].done
            try:
                self._stream(cursor)
            except (_Retry, httpx.TransportError, RegistryUnreachableError) as e:
                if self._stop.is_set():
                    return
                failures = 1 if cursor[0] is not before or cursor[0].done > done else failures + 1
                if failures > self.options.retries:
                    raise BlobTransferError(str(self.partial.digest), f"{_reason(e)} (gave up after "
                                            f"{self.options.retries} retries)") from e
                self._stop.wait(min(self.options.retry_delay * 2 ** (failures - 1), 30.0))
            except Exception:
                if self._stop.is_set():
                    return  # the main thread closed our response on its way out
                raise

    def _span_end(self, part: Part) -> int:
        """Where a request for `part` ends: its own end, or, while one part is fetched at a time, the end
        of the untouched parts that follow it, so one request (one stream) reads them all."""
        end = part.end
        with self._lock:
            if self._width == 1:
                for p in self._pending:
                    if p.start != end or p.done:
                        break
                    end = p.end
        return end

    def _next_in_span(self, part: Part) -> Part | None:
        """Take the part after `part` for the running stream, unless another thread may have it now."""
        with self._lock:
            if self._width == 1 and self._pending and self._pending[0].start == part.end and not self._pending[0].done:
                return self._pending.popleft()
        return None

    def _stream(self, cursor: list[Part]) -> None:
        digest, size = self.partial.digest, self.partial.size
        part = cursor[0]
        start, end = part.offset, self._span_end(part)
        resp = self.client.open_blob(digest, start, end - 1)
        with self._lock:
            self._open.add(resp)
        try:
            if resp.status_code == 200:
                if start != 0 or end != size:
                    raise _NoRanges()
            elif resp.status_code == 206:
                expected = f"bytes {start}-{end - 1}/"
                if not resp.headers.get("content-range", "").startswith(expected):
                    raise BlobTransferError(str(digest), f"asked for {expected[6:-1]}, the registry sent "
                                            f"{resp.headers.get('content-range')!r}")
            elif resp.status_code in (408, 429) or resp.status_code >= 500:
                raise _Retry(f"the registry answered {resp.status_code}")
            else:
                error = self.client.fail(resp, f"pull blob {digest.short}")
                raise BlobTransferError(str(digest), error.message) from error
            fd, at = self.partial.fd, start
            for chunk in _chunks(resp):
                if len(chunk) > end - at:
                    raise BlobTransferError(str(digest), "the registry sent more bytes than were asked for")
                view = memoryview(chunk)
                while view:
                    if part.remaining == 0:
                        nxt = self._next_in_span(part)
                        if nxt is None:
                            return  # the parts after it went to other threads: this stream ends here
                        part = cursor[0] = nxt
                    n = min(len(view), part.remaining)
                    _pwrite_all(fd, view[:n], at)
                    with self._lock:
                        part.done += n
                        self.downloaded += n
                    at += n
                    view = view[n:]
                if self._stop.is_set() or self.cancel.is_set():
                    return  # after keeping what arrived
            if at < end:
                raise _Retry(f"the connection ended {end - at} bytes early")
        finally:
            with self._lock:
                self._open.discard(resp)
            resp.close()


def _chunks(resp: Response) -> Iterator[bytes]:
    """The body as it arrives: one recv a piece from rawhttp, httpx's 64 KiB pieces through a proxy."""
    return resp.iter_raw(READ_SIZE) if isinstance(resp, RawResponse) else resp.iter_raw()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    written = os.pwrite(fd, data, offset)
    if written < len(data):  # rare for a regular file (a signal, a full disk on the next call)
        view = memoryview(data)
        while written < len(data):
            written += os.pwrite(fd, view[written:], offset + written)


def _hang_up(resp: Response) -> None:
    """Shut the response's socket down, so a thread blocked reading it returns at once."""
    if isinstance(resp, RawResponse):
        resp.hang_up()
        return
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
