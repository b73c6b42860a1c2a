"""A blob on its way into the store: the partial file, its sidecar, the lock on them, and the hash.

    blobs/sha256-<hex>-partial        the blob's bytes as they arrive (sparse, the blob's full size)
    blobs/sha256-<hex>-partial.json   {"size": N, "parts": [[start, end, done], ...]}: what is there

The sidecar records how far each part got; the downloader saves it while bytes move and whenever
a download stops, always after the bytes it claims were written, so a pull started again (another
process, after a restart, after a SIGKILL) fetches only what is missing. The bytes contiguous from
the start are hashed while the rest downloads (read back from the page cache, which costs far less
than the hash itself), and once hashed are handed to the kernel to write to disk (`write_back`),
so verifying and the final fsync mostly overlap the transfer. `commit` hashes what is left and
renames the file to `blobs/sha256-<hex>` only if the sha256 matches; otherwise both partial files
are removed and DigestMismatchError is raised, so wrong bytes never enter the store. An exclusive
flock on the partial file keeps two pulls of the same blob (threads or processes) from writing it
at once; the second finds the blob done.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass

from corral.store.errors import DigestMismatchError
from corral.store.manifest import Layer
from corral.store.store import Store
from corral.registry.options import TransferOptions

HASH_CHUNK = 1 << 20  # bytes read back from the file per hash update (the buffer stays in cache)


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
        self.written_back = 0  # bytes [0, written_back) were handed to the kernel to write (see write_back)
        self.hash_lock = threading.Lock()  # one hasher at a time
        self._buffer = memoryview(bytearray(HASH_CHUNK))  # what the hash reads the file into

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
        """Feed bytes [hashed, end) to the running hash, at most `budget` of them now."""
        with self.hash_lock:
            stop = min(end, self.hashed + budget)
            buffer = self._buffer
            while self.hashed < stop and (n := os.preadv(self.fd, [buffer[:min(HASH_CHUNK, stop - self.hashed)]],
                                                         self.hashed)):
                self.hasher.update(buffer[:n])  # hashlib lets go of the GIL: parts keep arriving
                self.hashed += n

    def write_back(self) -> None:
        """Hand the bytes hashed since the last call to the kernel to write to disk (they never change again).

        So the fsync in `commit` finds little left to write instead of the whole blob. The call
        waits while the disk's queue is full (~0.3 s a GB here), so it is made from the thread that
        reports progress, never from the hash thread, which it would hold back.
        """
        hashed = self.hashed
        if hashed > self.written_back:
            _write_back(self.fd, self.written_back, hashed - self.written_back)
            self.written_back = hashed

    def restart_hash(self) -> None:
        with self.hash_lock:
            self.hasher, self.hashed, self.written_back = hashlib.sha256(), 0, 0

    def commit(self) -> None:
        """Hash the rest of the finished file; rename it into blobs/ if it matches, else remove it and raise."""
        self.hash_to(self.size)
        self.write_back()
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


def _write_back(fd: int, start: int, length: int) -> None:
    """Start writing a range of the file to disk now, without waiting (POSIX_FADV_DONTNEED does on Linux)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)
