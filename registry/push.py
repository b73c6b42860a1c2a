"""`push`: a stored model to any OCI registry, with Ollama's progress events.

    retrieving manifest       the model's manifest from the store
    pushing <12 hex>          each layer, then the config: `HEAD` first, skipped when the registry
                              has it; else `POST .../blobs/uploads/`, then the bytes (one `PUT
                              ?digest=` for a small blob, `PATCH` chunks with Content-Range and a
                              closing `PUT ?digest=` for a large one), following each Location
    pushing manifest          `PUT .../manifests/{tag}` with the manifest's bytes
    success

Blobs are streamed from their files, so memory stays flat. A chunk whose connection drops is
retried from the offset the registry reports for the session (`GET {Location}` -> `Range: 0-N`).
The manifest goes last, so a registry never holds a tag whose blobs it lacks.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from corral.store.errors import InvalidManifestError
from corral.store.manifest import Layer
from corral.store.names import ModelName, parse
from corral.store.store import Store
from corral.registry.client import RegistryClient, endpoint_for
from corral.registry.credentials import Credentials
from corral.registry.download import TransferOptions
from corral.registry.errors import BlobTransferError, RegistryUnreachableError, TransferCancelledError
from corral.registry.events import (
    PUSHING_MANIFEST,
    RETRIEVING_MANIFEST,
    SUCCESS,
    Progress,
    ProgressEvent,
    ignore,
    layer_event,
)
from corral.registry.pull import unique_blobs

READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push sent."""

    name: ModelName
    digest: str  # sha256 hex of the manifest bytes sent
    uploaded: int  # blob bytes sent (blobs the registry had are not counted)
    skipped: int  # blobs the registry already had


def push(store: Store, name: str | ModelName, *, insecure: bool = False, registry: str | None = None,
         credentials: Credentials | None = None, progress: Progress | None = None,
         cancel: threading.Event | None = None, options: TransferOptions | None = None) -> PushResult:
    """Push the stored model `name` to the registry its host names (see `pull` for the arguments).

    Raises ModelNotFoundError when the store lacks the model, BlobNotFoundError when it lacks one
    of its blobs, and RegistryError subclasses for what the registry refuses.
    """
    model = parse(name) if isinstance(name, str) else name
    model.filepath_parts()
    options = options or TransferOptions()
    emit = progress or ignore
    cancel = cancel or threading.Event()
    emit(ProgressEvent(RETRIEVING_MANIFEST))
    manifest = store.read_manifest(model)
    data = manifest.to_bytes()
    endpoint = endpoint_for(model, insecure=insecure, registry=registry)
    credential = credentials.for_host(endpoint.host) if credentials is not None else None
    uploaded = skipped = 0
    with RegistryClient(endpoint, model, credential=credential, insecure=insecure, push=True,
                        timeout=options.timeout) as client:
        for layer in unique_blobs(manifest):
            if cancel.is_set():
                raise TransferCancelledError("push")
            path = store.blob_path(layer.digest, must_exist=True)
            if (actual := path.stat().st_size) != layer.size:
                raise InvalidManifestError(str(model), f"layer {layer.digest} says {layer.size} bytes "
                                           f"but the blob holds {actual}")
            emit(layer_event("pushing", layer.digest, layer.size, 0))
            if client.blob_exists(layer.digest):
                skipped += 1
            else:
                upload_blob(client, path, layer, options, emit, cancel)
                uploaded += layer.size
            emit(layer_event("pushing", layer.digest, layer.size, layer.size))
        emit(ProgressEvent(PUSHING_MANIFEST))
        client.put_manifest(data)
    emit(ProgressEvent(SUCCESS))
    return PushResult(name=model, digest=hashlib.sha256(data).hexdigest(), uploaded=uploaded, skipped=skipped)


def upload_blob(client: RegistryClient, path: Path, layer: Layer, options: TransferOptions,
                emit: Progress, cancel: threading.Event) -> None:
    """Send one blob's file: monolithic up to `options.upload_chunk`, in PATCH chunks beyond."""
    size, digest = layer.size, layer.digest
    reporter = _Reporter(lambda done: emit(layer_event("pushing", digest, size, done)), options.interval)
    location = client.start_upload()
    if size <= options.upload_chunk:
        client.finish_upload(location, digest, lambda: _read(path, 0, size, reporter, cancel), size)
        return
    offset, failures = 0, 0
    while offset < size:
        length = min(options.upload_chunk, size - offset)
        try:
            location = client.upload_chunk(
                location, lambda start=offset, n=length: _read(path, start, n, reporter, cancel), offset, length)
            offset += length
            failures = 0
        except RegistryUnreachableError as e:
            failures += 1
            if failures > options.retries:
                raise BlobTransferError(str(digest), f"upload: {e.reason} (gave up after {options.retries} retries)") from e
            time.sleep(min(options.retry_delay * 2 ** (failures - 1), 30.0))
            location, offset = client.upload_offset(location)
    client.finish_upload(location, digest)


class _Reporter:
    """Calls `report(done)` at most every `interval` seconds, and always for the last byte."""

    def __init__(self, report: Callable[[int], None], interval: float):
        self.report = report
        self.interval = interval
        self.last = 0.0

    def __call__(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= self.interval:
            self.last = now
            self.report(done)


def _read(path: Path, start: int, length: int, reporter: _Reporter, cancel: threading.Event) -> Iterator[bytes]:
    """`length` bytes of the file from `start`, in pieces, reporting the offset reached."""
    with path.open("rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            if cancel.is_set():
                raise TransferCancelledError("push")
            chunk = f.read(min(READ_CHUNK, left))
            if not chunk:
                raise BlobTransferError(f"sha256:{path.name[7:]}", "the blob file is shorter than its manifest says")
            left -= len(chunk)
            yield chunk
            reporter(start + length - left, final=left == 0)
