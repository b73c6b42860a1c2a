"""Downloading one blob into the store: parallel ranged parts, resumable, verified before it enters.

    blobs/sha256-<hex>-partial        the blob's bytes as they arrive (sparse, the blob's full size)
    blobs/sha256-<hex>-partial.json   {"size": N, "parts": [[start, end, done], ...]}: what is there

A blob is cut into parts (`Range: bytes=a-b`), fetched by up to a few threads at once (or in order
by one thread while the bytes arrive fast, when TransferOptions.fast_stream is set), and written in place with pwrite, so memory stays flat whatever the size. The sidecar records how far each part
got; it is saved five times a second while bytes move and whenever the download stops (an error,
Ctrl-C, a cancel), always after the bytes it claims were written, so a dropped connection is
retried from where it broke and a pull started again (another process, after a restart, after a
SIGKILL) fetches only what is missing. A part that fails is retried with exponential backoff; any
progress resets its count. A registry that ignores Range gets one sequential download from the
start.

While parts download, the bytes already contiguous from the start are hashed (from memory by the
part the hash has reached, as each chunk is written; read back from the file for parts that
finished ahead of it), and once hashed are handed to the kernel to write to disk, so verifying and
the final fsync mostly overlap the transfer. `commit` hashes the rest of the finished partial file and renames it to
`blobs/sha256-<hex>` only if the sha256 matches; otherwise both partial files are removed and
DigestMismatchError is raised, so wrong bytes never enter the store. An exclusive flock on the
partial file keeps two pulls of the same blob (threads or processes) from writing it at once; the
second finds the blob done.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import socket
import threading
import time
from collections import deque
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
HASH_AHEAD = 16 << 20  # bytes hashed at a time from the file; bytes between write-back hints
RAMP_WINDOW = 0.5  # seconds over which a download's speed is judged before another part joins


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How transfers are cut up and retried; the defaults suit real networks, tests shrink them."""

    min_part_size: int = 64 << 20
    max_part_size: int = 1 << 30
    max_parts: int = 16  # a blob is cut into at most this many parts (within the part sizes)
    parallel: int = 4  # parts fetched at once, at most
    # One part is fetched at a time while the bytes arrive at least this fast (bytes a second);
    # each RAMP_WINDOW slower than that lets one more part join, up to `parallel`. 0 (the default):
    # `parallel` parts from the start. Measured on a quiet 2-core machine (bench/pull.py, loopback
    # registry, 1 GB): one stream at 256 MB/s gave 0.38x curl, parallel parts 0.57x, so the ramp
    # stays off until a real network shows it pays.
    fast_stream: int = 0
    retries: int = 5  # attempts of a part in a row that make no progress, after the first
    retry_delay: float = 0.5  # seconds before the first retry; doubled each time, at most 30
    timeout: float = 60.0  # seconds without a byte before a connection counts as dropped
    interval: float = 0.1  # seconds between progress events of a layer
    upload_chunk: int = 64 << 20  # push: blobs larger than this go in PATCH chunks of this size
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
        self.written_back = 0  # bytes [0, written_back) were handed to the kernel to write to disk
        self.hash_lock = threading.Lock()  # one hasher at a time: the file's, or a part's from memory

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
        with self.hash_lock:
            self._hash_file(min(end, self.hashed + budget))
            self._write_back(force=True)

    def _hash_file(self, stop: int) -> None:
        buffer = bytearray(HASH_CHUNK)
        view = memoryview(buffer)
        while self.hashed < stop and (n := os.preadv(self.fd, [view[:min(HASH_CHUNK, stop - self.hashed)]], self.hashed)):
            self.hasher.update(view[:n])
            self.hashed += n

    def hash_written(self, part: Part, offset: int, chunk: bytes) -> None:
        """Hash `chunk`, just written at `offset` in `part`, from memory once the hash has reached the part.

        The part's bytes before `offset` that the hash lacks (written before it got there) are read
        back first. Bytes of later parts wait for `hash_to`. Hashing from memory saves a second
        copy of every byte (hashlib lets go of the GIL, so other parts keep arriving meanwhile).
        """
        if not part.start <= self.hashed <= offset or not self.hash_lock.acquire(blocking=False):
            return
        try:
            if part.start <= self.hashed <= offset:
                self._hash_file(offset)
                self.hasher.update(chunk)
                self.hashed += len(chunk)
                self._write_back()
        finally:
            self.hash_lock.release()

    def _write_back(self, force: bool = False) -> None:
        """Hand the hashed bytes not yet handed to the kernel to write (in steps of HASH_AHEAD unless `force`)."""
        if self.hashed - self.written_back >= (1 if force else HASH_AHEAD):
            _write_back(self.fd, self.written_back, self.hashed - self.written_back)
            self.written_back = self.hashed

    def restart_hash(self) -> None:
        with self.hash_lock:
            self.hasher, self.hashed, self.written_back = hashlib.sha256(), 0, 0

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
        self._open: set[httpx.Response] = set()

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
        pending = deque(p for p in self.partial.parts if p.remaining > 0)
        if not pending:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.options.parallel, len(pending)), thread_name_prefix="corral-pull")
        futures: set[Future[None]] = set()
        width = 1 if self.options.fast_stream > 0 else self.options.parallel  # parts wanted at once
        finished = threading.Event()
        hasher = threading.Thread(target=self._hash_behind, args=(finished,), name="corral-hash", daemon=True)
        hasher.start()
        last, saved = -1, time.monotonic()
        window, window_bytes = saved, self.downloaded
        try:
            while futures or pending:
                while pending and len(futures) < width:
                    futures.add(pool.submit(self._fetch_part, pending.popleft()))  # in order: the hash front first
                done, futures = wait(futures, timeout=self.options.interval, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()
                if self.cancel.is_set():
                    raise TransferCancelledError("pull")
                now = time.monotonic()
                if now - window >= RAMP_WINDOW:
                    if self.downloaded - window_bytes < self.options.fast_stream * (now - window):
                        width = min(width + 1, self.options.parallel)
                    window, window_bytes = now, self.downloaded
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
        """Hash the bytes contiguous from the start as they arrive, so verifying overlaps downloading.

        The part the hash has reached hashes its own bytes from memory (PartialBlob.hash_written);
        this thread reads the file for the parts after it that finished first, once it is done,
        and for whatever is left when the download is over.
        """
        while not self._stop.is_set():
            with self._lock:
                end = self.partial.contiguous()
                hashed = self.partial.hashed
                front_done = all(p.remaining == 0 for p in self.partial.parts if p.start <= hashed < p.end)
            if end > hashed and (front_done or finished.is_set()):
                self.partial.hash_to(end, budget=HASH_AHEAD)
            elif finished.is_set():
                return
            else:
                finished.wait(0.005)

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
        digest, size = self.partial.digest, self.partial.size
        resp = self.client.open_blob(digest, part.offset, part.end - 1)
        with self._lock:
            self._open.add(resp)
        try:
            if resp.status_code == 200:
                if part.offset != 0 or part.end != size:
                    raise _NoRanges()
            elif resp.status_code == 206:
                expected = f"bytes {part.offset}-{part.end - 1}/"
                if not resp.headers.get("content-range", "").startswith(expected):
                    raise BlobTransferError(str(digest), f"asked for {expected[6:-1]}, the registry sent "
                                            f"{resp.headers.get('content-range')!r}")
            elif resp.status_code in (408, 429) or resp.status_code >= 500:
                raise _Retry(f"the registry answered {resp.status_code}")
            else:
                error = self.client.fail(resp, f"pull blob {digest.short}")
                raise BlobTransferError(str(digest), error.message) from error
            for chunk in resp.iter_raw():
                if len(chunk) > part.remaining:
                    raise BlobTransferError(str(digest), "the registry sent more bytes than were asked for")
                at = part.offset
                os.pwrite(self.partial.fd, chunk, at)
                with self._lock:
                    part.done += len(chunk)
                    self.downloaded += len(chunk)
                self.partial.hash_written(part, at, chunk)
                if self._stop.is_set() or self.cancel.is_set():
                    return  # after keeping what arrived
            if part.remaining > 0:
                raise _Retry(f"the connection ended {part.remaining} bytes early")
        finally:
            with self._lock:
                self._open.discard(resp)
            resp.close()


def _write_back(fd: int, start: int, length: int) -> None:
    """Start writing a range of the file to disk now, without waiting (POSIX_FADV_DONTNEED does on Linux)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)


def _hang_up(resp: httpx.Response) -> None:
    """Shut the response's socket down, so a thread blocked reading it returns at once."""
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
