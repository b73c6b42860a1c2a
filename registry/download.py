"""Downloading one blob into the store: parallel ranged parts, resumable, verified before it enters.

    blobs/sha256-<hex>-partial        the blob's bytes as they arrive (sparse, the blob's full size)
    blobs/sha256-<hex>-partial.json   {"size": N, "parts": [[start, end, done], ...]}: what is there

A blob is cut into parts (`Range: bytes=a-b`), fetched by a few threads at once and written in
place with pwrite, so memory stays flat whatever the size. The sidecar records how far each part
got; it is saved five times a second while bytes move and whenever the download stops (an error,
Ctrl-C, a cancel), always after the bytes it claims were written, so a dropped connection is
retried from where it broke and a pull started again (another process, after a restart, after a
SIGKILL) fetches only what is missing. A part that fails is retried with exponential backoff; any
progress resets its count. A registry that ignores Range gets one sequential download from the
start.

While parts download, the bytes already contiguous from the start are hashed, and once hashed are
handed to the kernel to write to disk, so verifying and the final fsync mostly overlap the
transfer. `commit` hashes the rest of the finished partial file and renames it to
`blobs/sha256-<hex>` only if the sha256 matches; otherwise both partial files are removed and
DigestMismatchError is raised, so wrong bytes never enter the store. An exclusive flock on the
partial file keeps two pulls of the same blob (threads or processes) from writing it at once; the
second finds the blob done.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import math
import os
import queue
import socket
import ssl
import threading
import time
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

import httpx

from corral.store.errors import DigestMismatchError
from corral.store.manifest import Layer
from corral.store.store import Store
from corral.registry.client import RegistryClient
from corral.registry.errors import BlobTransferError, RegistryUnreachableError, TransferCancelledError
from corral.registry.manifests import Limits

HASH_CHUNK = 1 << 20
SAVE_EVERY = 0.2  # seconds between sidecar saves while bytes move (what a killed pull keeps)
HASH_AHEAD = 16 << 20  # bytes hashed at a time, behind the download
READ_SIZE = 256 << 10  # bytes of one read from a blob's socket (larger reads copy slower: they leave the CPU cache)
BUFFERS = 32  # read buffers a download holds beyond one per stream: what the hash thread may lag behind
_HOP_HEADERS = frozenset({"host", "range", "connection", "content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How transfers are cut up and retried; the defaults suit real networks, tests shrink them."""

    min_part_size: int = 64 << 20
    max_part_size: int = 1 << 30
    max_parts: int = 16  # a blob is cut into at most this many parts (within the part sizes)
    parallel: int = 4  # parts fetched at once
    retries: int = 5  # attempts of a part in a row that make no progress, after the first
    retry_delay: float = 0.5  # seconds before the first retry; doubled each time, at most 30
    timeout: float = 60.0  # seconds without a byte before a connection counts as dropped
    interval: float = 0.1  # seconds between progress events of a layer
    upload_chunk: int = 64 << 20  # push: blobs larger than this go in PATCH chunks of this size
    direct_min: int = 32 << 20  # blobs this large are read with http.client once a 1-byte probe found their URL
    limits: Limits = Limits()


@dataclass(slots=True)
class Part:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def offset(self) -> int:
        return self.start + self.done

    @property
    def remaining(self) -> int:
        return self.end - self.offset


def plan_parts(size: int, options: TransferOptions) -> list[Part]:
    """`size` bytes cut into parts of equal size within the options' bounds (none for an empty blob)."""
    if size <= 0:
        return []
    length = min(max(math.ceil(size / options.max_parts), options.min_part_size), options.max_part_size)
    return [Part(start, min(start + length, size)) for start in range(0, size, length)]


class _Retry(Exception):
    """A part stopped early in a way worth trying again (a drop, a short body, a 5xx)."""


class _NoRanges(Exception):
    """The registry answered a ranged request with the whole blob."""


class PartialBlob:
    """A blob on its way into the store: its partial file, its sidecar, and the lock on them."""

    def __init__(self, store: Store, layer: Layer):
        self.store = store
        self.digest = layer.digest
        self.size = layer.size
        self.target = store.blob_path(layer.digest)  # the digest was validated; so is this path
        self.path = self.target.with_name(self.target.name + "-partial")
        self.sidecar = self.target.with_name(self.target.name + "-partial.json")
        self.parts: list[Part] = []
        self.fd = -1
        self.hasher = hashlib.sha256()  # over bytes [0, hashed): hashed while the rest downloads
        self.hashed = 0

    def done_bytes(self) -> int:
        """What an earlier download left (0 when unknown); reads without the lock, for planning."""
        parts = self._read_sidecar()
        return sum(p.done for p in parts) if parts is not None else 0

    def open(self, options: TransferOptions) -> bool:
        """Lock and load the partial file; False when the blob turned out to be stored already."""
        self.store.blobs_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False  # another pull committed or discarded it while we waited
            if same:
                break
            os.close(fd)
            if self.store.has_blob(self.digest):
                return False
        self.fd = fd
        if self.store.has_blob(self.digest):
            self.close()
            return False
        parts = self._read_sidecar()
        if parts is None or os.fstat(fd).st_size != self.size:
            parts = plan_parts(self.size, options)
            os.ftruncate(fd, 0)
            os.ftruncate(fd, self.size)
        self.parts = parts
        self.save()
        return True

    def _read_sidecar(self) -> list[Part] | None:
        try:
            data = json.loads(self.sidecar.read_text(encoding="utf-8"))
            if data.get("size") != self.size or os.stat(self.path).st_size != self.size:
                return None
            parts = [Part(int(s), int(e), int(d)) for s, e, d in data["parts"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        expected = 0
        for p in parts:  # contiguous, covering [0, size), each done within its part
            if p.start != expected or p.end <= p.start or not 0 <= p.done <= p.end - p.start:
                return None
            expected = p.end
        return parts if expected == self.size else None

    def save(self) -> None:
        """Write the sidecar atomically (after the bytes it claims were written)."""
        record = {"size": self.size, "parts": [[p.start, p.end, p.done] for p in self.parts]}
        temp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        temp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(temp, self.sidecar)

    @property
    def completed(self) -> int:
        return sum(p.done for p in self.parts)

    def contiguous(self) -> int:
        """The end of the longest run of downloaded bytes from offset 0 (bytes there never change)."""
        end = 0
        for p in self.parts:
            end = p.offset
            if p.remaining > 0:
                break
        return end

    def hash_to(self, end: int, budget: int = 1 << 62) -> None:
        """Feed bytes [hashed, end) to the running hash, at most `budget` of them now.

        The bytes hashed are then handed to the kernel to write back (they never change again), so
        the fsync in `commit` finds little left to write instead of the whole blob.
        """
        start, stop = self.hashed, min(end, self.hashed + budget)
        buffer = bytearray(HASH_CHUNK)
        view = memoryview(buffer)
        while self.hashed < stop and (n := os.preadv(self.fd, [view[:min(HASH_CHUNK, stop - self.hashed)]], self.hashed)):
            self.hasher.update(view[:n])
            self.hashed += n
        if self.hashed > start:
            _write_back(self.fd, start, self.hashed - start)

    def restart_hash(self) -> None:
        self.hasher, self.hashed = hashlib.sha256(), 0

    def commit(self) -> None:
        """Hash the rest of the finished file; rename it into blobs/ if it matches, else remove it and raise."""
        self.hash_to(self.size)
        got = f"sha256:{self.hasher.hexdigest()}"
        if got != str(self.digest) or self.hashed != self.size:
            self.discard()
            raise DigestMismatchError(str(self.digest), got, hint="the registry sent other bytes than its "
                                      "manifest names; nothing was stored")
        os.fsync(self.fd)
        os.fchmod(self.fd, 0o644)
        os.replace(self.path, self.target)
        self.sidecar.unlink(missing_ok=True)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1


class _Source:
    """Where a blob's bytes are read directly: the last hop a ranged GET reached, and its headers.

    Taken from the request httpx really sent (after redirects and any 401 answer), so it carries an
    Authorization header only where RegistryClient attached one: to the registry's own origin.
    """

    def __init__(self, request: httpx.Request):
        self.url = request.url
        self.headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        self.target = request.url.raw_path.decode("ascii")
        self.key = (self.url.scheme, self.url.host, self.url.port)


class BlobDownload:
    """Fetches the missing parts of one PartialBlob through a RegistryClient.

    A large blob's first request asks for one byte through the client (redirects, auth and errors
    handled there); the parts are then read from the URL that request reached with the standard
    library's http.client straight into reused buffers, a few hundred KiB a read. The buffers that
    extend the bytes contiguous from the start go to the hash thread as they are, so most of the
    blob is hashed from memory once; bytes that arrived out of order are read back from the file.
    """

    def __init__(self, client: RegistryClient, partial: PartialBlob, options: TransferOptions,
                 cancel: threading.Event | None = None):
        self.client = client
        self.partial = partial
        self.options = options
        self.cancel = cancel or threading.Event()
        self.downloaded = 0  # bytes received in this run (resumed bytes not counted)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open: set[object] = set()  # httpx responses and http.client connections being read
        self._direct = partial.size >= options.direct_min
        self._source: _Source | None = None
        self._probe_lock = threading.Lock()
        self._idle: list[tuple[tuple, http.client.HTTPConnection]] = []
        self._buffers: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._hashing: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._frontier = 0  # bytes [0, frontier) are hashed or queued to be, in order

    def run(self, on_progress: Callable[[int], None]) -> None:
        """Fetch every missing byte; `on_progress(completed)` runs on this thread, every `interval`."""
        try:
            self._run_parts(on_progress)
        except _NoRanges:
            self.partial.parts = [Part(0, self.partial.size)]  # start over, in one piece
            self.partial.restart_hash()
            self._direct, self._source = False, None
            self._stop.clear()
            self._run_parts(on_progress)
        finally:
            for _, conn in self._idle:
                conn.close()
            self._idle.clear()

    def _run_parts(self, on_progress: Callable[[int], None]) -> None:
        pending = [p for p in self.partial.parts if p.remaining > 0]
        if not pending:
            return
        workers = min(self.options.parallel, len(pending))
        self._buffers, self._hashing = queue.SimpleQueue(), queue.SimpleQueue()
        for _ in range(workers + BUFFERS if self._direct else 0):
            self._buffers.put(memoryview(bytearray(READ_SIZE)))
        self._frontier = self.partial.hashed
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="corral-pull")
        futures: set[Future[None]] = {pool.submit(self._fetch_part, p) for p in pending}
        finished = threading.Event()
        hasher = threading.Thread(target=self._hash_behind, args=(finished,), name="corral-hash", daemon=True)
        hasher.start()
        last, saved = -1, time.monotonic()
        try:
            while futures:
                done, futures = wait(futures, timeout=self.options.interval, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()
                if self.cancel.is_set():
                    raise TransferCancelledError("pull")
                with self._lock:
                    completed = self.partial.completed
                    if done or time.monotonic() - saved >= SAVE_EVERY:
                        self.partial.save()
                        saved = time.monotonic()
                if completed != last:
                    on_progress(completed)
                    last = completed
        except BaseException:
            self._stop.set()
            with self._lock:
                for stream in list(self._open):
                    _hang_up(stream)  # wakes a worker blocked in a read
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            finished.set()
            self._hashing.put(None)
            hasher.join()
            with self._lock:
                self.partial.save()

    def _hash_behind(self, finished: threading.Event) -> None:
        """Hash the bytes contiguous from the start as they arrive, so verifying overlaps downloading.

        Buffers queued by the readers are hashed from memory; when none is waiting and the
        contiguous bytes reach past the frontier (a part that arrived early joined up), those are
        read back from the file.
        """
        partial = self.partial
        flushed = partial.hashed
        while not self._stop.is_set():
            try:
                view = self._hashing.get(timeout=0.005)
            except queue.Empty:
                view = None
            if view is not None:
                partial.hasher.update(view)
                partial.hashed += len(view)
                self._buffers.put(memoryview(view.obj))  # the whole buffer, back to the readers
                if partial.hashed - flushed >= HASH_AHEAD:
                    _write_back(partial.fd, flushed, partial.hashed - flushed)
                    flushed = partial.hashed
                continue
            with self._lock:
                idle = self._frontier == partial.hashed
                end = partial.contiguous() if idle else partial.hashed
                if end > self._frontier:
                    self._frontier = end  # readers queue what comes after; it is hashed after this
            if end > partial.hashed:
                if partial.hashed > flushed:
                    _write_back(partial.fd, flushed, partial.hashed - flushed)
                partial.hash_to(end)
                flushed = partial.hashed
            elif idle and finished.is_set():
                break
        if partial.hashed > flushed:
            _write_back(partial.fd, flushed, partial.hashed - flushed)

    def _fetch_part(self, part: Part) -> None:
        failures = 0
        while part.remaining > 0 and not (self._stop.is_set() or self.cancel.is_set()):
            before = part.done
            try:
                self._stream(part)
            except (_Retry, httpx.TransportError, RegistryUnreachableError) as e:
                if self._stop.is_set():
                    return
                failures = 1 if part.done > before else failures + 1
                if failures > self.options.retries:
                    raise BlobTransferError(str(self.partial.digest), f"{_reason(e)} (gave up after "
                                            f"{self.options.retries} retries)") from e
                self._stop.wait(min(self.options.retry_delay * 2 ** (failures - 1), 30.0))
            except Exception:
                if self._stop.is_set():
                    return  # the main thread closed our response on its way out
                raise

    def _stream(self, part: Part) -> None:
        if self._direct and self._source is None:
            with self._probe_lock:
                if self._source is None:
                    self._stream_client(part, probe=True)  # one byte, through the client
                    return
        source = self._source
        if source is not None and not _proxied(source.url):
            self._stream_direct(part, source)
        else:
            self._stream_client(part)

    def _check_range(self, status: int, content_range: str | None, part: Part, stop: int) -> None:
        digest, size = self.partial.digest, self.partial.size
        if status == 200:
            if part.offset != 0 or part.end != size:
                raise _NoRanges()
        elif status == 206:
            expected = f"bytes {part.offset}-{stop - 1}/"
            if not (content_range or "").startswith(expected):
                raise BlobTransferError(str(digest), f"asked for {expected[6:-1]}, the registry sent "
                                        f"{content_range!r}")

    def _stream_client(self, part: Part, probe: bool = False) -> None:
        """Read [offset, end) of `part` through the RegistryClient (httpx); only its first byte when `probe`."""
        digest = self.partial.digest
        stop = part.offset + 1 if probe else part.end
        resp = self.client.open_blob(digest, part.offset, stop - 1)
        with self._lock:
            self._open.add(resp)
        try:
            if resp.status_code in (200, 206):
                self._check_range(resp.status_code, resp.headers.get("content-range"), part, stop)
                if resp.status_code == 200:
                    stop = part.end  # the whole blob, in one piece
            elif resp.status_code in (408, 429) or resp.status_code >= 500:
                raise _Retry(f"the registry answered {resp.status_code}")
            else:
                error = self.client.fail(resp, f"pull blob {digest.short}")
                raise BlobTransferError(str(digest), error.message) from error
            for chunk in resp.iter_raw():
                if len(chunk) > stop - part.offset:
                    raise BlobTransferError(str(digest), "the registry sent more bytes than were asked for")
                self._keep(part, chunk)
                if self._stop.is_set() or self.cancel.is_set():
                    return  # after keeping what arrived
            if stop > part.offset:
                raise _Retry(f"the connection ended {stop - part.offset} bytes early")
            if probe and resp.status_code == 206:
                self._source = _Source(resp.request)
        finally:
            with self._lock:
                self._open.discard(resp)
            resp.close()

    def _stream_direct(self, part: Part, source: _Source) -> None:
        """Read the rest of `part` from `source` with http.client, into buffers shared with the hash thread."""
        digest = self.partial.digest
        conn = self._connection(source)
        with self._lock:
            self._open.add(conn)
        reusable = False
        try:
            try:
                conn.request("GET", source.target, headers={**source.headers, "Range": f"bytes={part.offset}-{part.end - 1}"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise _Retry(_reason(e)) from e
            status = resp.status
            if status in (200, 206):
                self._check_range(status, resp.getheader("content-range"), part, part.end)
            elif status in (408, 429) or status >= 500:
                raise _Retry(f"the registry answered {status}")
            else:  # an expired URL or token, a new redirect: ask through the client again
                self._source = None
                raise _Retry(f"the blob's storage answered {status}")
            # A body of exactly the asked length is read from the socket's buffered reader, each read
            # returning what has arrived (http.client's readinto waits to fill the buffer).
            exact = resp.chunked is False and resp.length == part.remaining
            read = resp.fp.readinto1 if exact else resp.readinto
            while part.remaining > 0 or not exact:  # the http.client read says where the body ends
                view = self._buffer()
                if view is None:
                    return
                try:
                    n = read(view[:min(len(view), part.remaining + 1)])
                except (OSError, http.client.HTTPException) as e:
                    self._buffers.put(view)
                    raise _Retry(_reason(e)) from e
                if n == 0:
                    self._buffers.put(view)
                    break
                if n > part.remaining:
                    self._buffers.put(view)
                    raise BlobTransferError(str(digest), "the registry sent more bytes than were asked for")
                self._keep(part, view[:n], view)
                if self._stop.is_set() or self.cancel.is_set():
                    return  # after keeping what arrived
            if part.remaining > 0:
                raise _Retry(f"the connection ended {part.remaining} bytes early")
            reusable = not resp.will_close
            if exact:
                resp.close()  # its body was read past it: the connection is ready for the next request
        finally:
            with self._lock:
                self._open.discard(conn)
            if reusable and not self._stop.is_set():
                with self._lock:
                    self._idle.append((source.key, conn))
            else:
                conn.close()

    def _keep(self, part: Part, data: bytes | memoryview, buffer: memoryview | None = None) -> None:
        """Write bytes that arrived at the part's offset; a buffer that extends the hashed run goes to the hasher."""
        offset = part.offset
        os.pwrite(self.partial.fd, data, offset)
        with self._lock:
            part.done += len(data)
            self.downloaded += len(data)
            queued = buffer is not None and offset == self._frontier
            if queued:
                self._frontier += len(data)
        if queued:
            self._hashing.put(data)
        elif buffer is not None:
            self._buffers.put(buffer)

    def _buffer(self) -> memoryview | None:
        """A free read buffer (waiting while the hash thread holds them all); None when stopping."""
        while True:
            try:
                return self._buffers.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set() or self.cancel.is_set():
                    return None

    def _connection(self, source: _Source) -> http.client.HTTPConnection:
        with self._lock:
            for i, (key, conn) in enumerate(self._idle):
                if key == source.key:
                    del self._idle[i]
                    return conn
        url, timeout = source.url, self.options.timeout
        if url.scheme == "https":
            return http.client.HTTPSConnection(url.host, url.port, timeout=timeout, context=_ssl_context())
        return http.client.HTTPConnection(url.host, url.port, timeout=timeout)


def _write_back(fd: int, start: int, length: int) -> None:
    """Start writing a range of the file to disk now, without waiting (POSIX_FADV_DONTNEED does on Linux)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)


def _hang_up(stream: object) -> None:
    """Shut a response's or connection's socket down, so a thread blocked reading it returns at once."""
    if isinstance(stream, http.client.HTTPConnection):
        sock = stream.sock
    else:
        network = stream.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _proxied(url: httpx.URL) -> bool:
    """Whether the environment sends requests to `url` through a proxy (then httpx reads them, as it does the rest)."""
    proxies = urllib.request.getproxies_environment()
    if url.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass_environment(url.host, proxies)


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """The TLS settings httpx verifies with (its CA bundle, SSL_CERT_FILE/SSL_CERT_DIR), made once."""
    global _SSL
    if _SSL is None:
        _SSL = httpx.create_ssl_context()
    return _SSL
