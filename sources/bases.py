"""Base models that library definitions name by registry name, pulled in the background.

A definition whose FROM names a model the store lacks (`FROM llama3.2:1b`, `FROM
hf.co/OWNER/REPO:Q4_K_M`, `FROM 127.0.0.1:5000/team/model:tag`) waits for it. `Bases.want(name)`
starts corral.registry.pull for it in a thread of its own (one per base, however many definitions
name it) and keeps its state: `pulling` with the bytes done so far, or `error` with the message
and the time of the next try. A failed pull is tried again after 2 s, 4 s, 8 s ... (at most every
5 minutes); `want(name, now=True)` (an edited definition) tries at once. When a pull succeeds,
`on_ready` is called (the library then compiles what waited for it). `close()` cancels every
pull through the registry's `cancel` event (partial downloads stay in the store and a later pull
resumes them) and waits for the threads.

Plain http: a registry on this machine (a loopback address or localhost, as Docker treats them) or a
name written with `http://` is pulled without TLS; any other host over https.

`measure(name)` is what `corral apply --dry-run` shows: the bytes a pull would still download
(the registry's manifest read, against the blobs and partial files the store holds), or why the
registry could not be asked.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Literal

from corral.errors import CorralError
from corral.registry import ProgressEvent, TransferOptions
from corral.registry.access import RegistryAccess
from corral.registry.client import RegistryClient, endpoint_for
from corral.registry.errors import TransferCancelledError
from corral.registry.manifests import check_manifest
from corral.registry.pull import missing_bytes, unique_blobs
from corral.store import names
from corral.store.errors import InvalidNameError
from corral.store.store import Store

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 2.0
MOST_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class PullState:
    """Where the pull of one base stands, as /api/library shows it."""

    name: str  # the base, as FROM names it
    state: Literal["pulling", "error"]
    completed: int = 0  # bytes of the layers seen so far that are done (stored ones count)
    total: int = 0  # bytes of the layers seen so far
    attempts: int = 0
    error: str | None = None
    hint: str | None = None
    retry_at: datetime | None = None  # when the next try starts (state "error")

    @property
    def percent(self) -> int | None:
        return int(100 * self.completed / self.total) if self.total else None


@dataclass(frozen=True)
class Download:
    """What pulling a base would cost: bytes still missing from the store, or why unknown."""

    name: str
    bytes: int | None
    layers: int = 0
    error: str | None = None


def registry_name(value: str) -> str | None:
    """The model name `value` is, when it reads as one (None otherwise)."""
    try:
        names.parse(value)
    except InvalidNameError:
        return None
    return value


def plain_http(value: str, registry: str | None = None) -> bool:
    """Whether `value` is pulled over http: written `http://...`, or served from this machine."""
    if value.lower().startswith("http://"):
        return True
    try:
        host = endpoint_for(names.parse(value), insecure=True, registry=registry).host
    except CorralError:
        return False
    host = host.rsplit(":", 1)[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Job:
    name: str
    state: PullState
    cancel: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    thread: threading.Thread | None = None


class Bases:
    """The background pulls of one library's missing bases; thread-safe."""

    def __init__(self, store: Store, *, access: RegistryAccess | None = None,
                 options: TransferOptions | None = None, first_retry: float = FIRST_RETRY_SECONDS,
                 most_retry: float = MOST_RETRY_SECONDS):
        self.store = store
        self.access = access or RegistryAccess()
        self.registry = self.access.registry
        self.options = options or TransferOptions()
        self.first_retry = first_retry
        self.most_retry = most_retry
        self.on_ready: Callable[[str], None] | None = None
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def _key(name: str) -> str:
        return str(names.parse(name)).lower()

    def state(self, name: str) -> PullState | None:
        with self._lock:
            job = self._jobs.get(self._key(name))
            return job.state if job else None

    def want(self, name: str, *, now: bool = False) -> None:
        """Pull `name` unless a pull of it runs; `now` cuts short the wait before a retry."""
        key = self._key(name)
        with self._lock:
            if self._closed:
                return
            job = self._jobs.get(key)
            if job is not None:
                if now:
                    job.wake.set()
                return
            job = _Job(name, PullState(name, "pulling"))
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"pull {name}", daemon=True)
            self._jobs[key] = job
        job.thread.start()

    def keep(self, wanted: set[str]) -> None:
        """Cancel the pulls of bases no definition names any more."""
        keys = {self._key(n) for n in wanted}
        with self._lock:
            for key, job in list(self._jobs.items()):
                if key not in keys:
                    job.cancel.set()
                    job.wake.set()
                    del self._jobs[key]

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every pull and wait for its thread (what it downloaded stays for the next pull)."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            job.cancel.set()
            job.wake.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout)

    # -- one base's thread ---------------------------------------------------------------------------

    def _set(self, job: _Job, **changes) -> None:
        with self._lock:
            job.state = replace(job.state, **changes)

    def _progress(self, job: _Job) -> Callable[[ProgressEvent], None]:
        def report(event: ProgressEvent) -> None:
            if event.digest is None or event.total is None:
                return
            job.layers[event.digest] = (event.total, event.completed or 0)
            self._set(job, total=sum(t for t, _ in job.layers.values()),
                      completed=sum(c for _, c in job.layers.values()))
        return report

    def _run(self, job: _Job) -> None:
        attempt = 0
        while not job.cancel.is_set():
            attempt += 1
            job.layers.clear()
            self._set(job, state="pulling", attempts=attempt, completed=0, total=0, error=None, hint=None,
                      retry_at=None)
            log.info("library: pulling %s (try %d)", job.name, attempt)
            try:
                self.access.pull(self.store, job.name, insecure=plain_http(job.name, self.registry),
                                 progress=self._progress(job), cancel=job.cancel, options=self.options)
            except TransferCancelledError:
                if job.cancel.is_set():
                    return
                error: Exception = TransferCancelledError("pull")
            except Exception as e:  # a pull fails in many ways; each is shown and tried again
                error = e
            else:
                with self._lock:
                    if self._jobs.get(self._key(job.name)) is job:
                        del self._jobs[self._key(job.name)]
                log.info("library: pulled %s", job.name)
                if self.on_ready is not None and not job.cancel.is_set():
                    self.on_ready(job.name)
                return
            if job.cancel.is_set():
                return
            delay = min(self.first_retry * 2 ** (attempt - 1), self.most_retry)
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            self._set(job, state="error", error=message, hint=getattr(error, "hint", None),
                      retry_at=datetime.now(timezone.utc) + timedelta(seconds=delay))
            log.error("library: pulling %s failed: %s (next try in %.0f s)", job.name, message, delay)
            job.wake.wait(delay)
            job.wake.clear()

    # -- dry runs ----------------------------------------------------------------------------------

    def measure(self, name: str) -> Download:
        """The bytes a pull of `name` would still download; the error text when the registry cannot say."""
        try:
            model = names.parse(name)
            insecure = plain_http(name, self.registry)
            endpoint = endpoint_for(model, insecure=insecure, registry=self.registry)
            credential = self.access.credentials().for_host(endpoint.host)
            with RegistryClient(endpoint, model, credential=credential, insecure=insecure,
                                timeout=min(self.options.timeout, 15.0)) as client:
                manifest = check_manifest(client.get_manifest(self.options.limits), str(model), self.options.limits)
            blobs = unique_blobs(manifest)
            return Download(name, missing_bytes(self.store, blobs), len(blobs))
        except CorralError as e:
            return Download(name, None, 0, e.message)


__all__ = ["Bases", "Download", "PullState", "plain_http", "registry_name"]
