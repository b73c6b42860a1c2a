"""`pull`: a model from a registry into the store, resumable, verified, with Ollama's progress events.

    pulling manifest          the manifest, read within its bound and judged (corral.registry.manifests)
    pulling <12 hex>          each layer, then the config: skipped when stored, else downloaded
    verifying sha256 digest   each downloaded blob hashed, and renamed into blobs/ only if it matches
    writing manifest          last, so the model appears whole or not at all
    success

Before any byte is downloaded the free space of the store's disk is compared with what is still
missing (partial downloads counted as had). A failure at any point leaves the store with the
blobs verified so far and the partial files of the others, which the next pull resumes.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from corral.store.manifest import Layer, Manifest
from corral.store.names import ModelName, parse
from corral.store.store import Store
from corral.registry.client import RegistryClient, endpoint_for
from corral.registry.credentials import HUGGING_FACE_HOSTS, Credentials
from corral.registry.download import BlobDownload, PartialBlob, TransferOptions
from corral.registry.errors import InsufficientSpaceError, TransferCancelledError
from corral.registry.events import (
    PULLING_MANIFEST,
    SUCCESS,
    VERIFYING,
    WRITING_MANIFEST,
    Progress,
    ProgressEvent,
    ignore,
    layer_event,
)
from corral.registry.manifests import check_manifest


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull stored."""

    name: ModelName  # the fully qualified name the manifest was written under
    digest: str  # sha256 hex of the manifest file, as /api/tags reports it
    manifest: Manifest
    downloaded: int  # bytes fetched by this pull (resumed and already stored bytes not counted)


def unique_blobs(manifest: Manifest) -> list[Layer]:
    """The layers, then the config, each digest once (in Ollama's order)."""
    seen: dict[str, Layer] = {}
    for layer in manifest.all_layers():
        seen.setdefault(str(layer.digest), layer)
    return list(seen.values())


def missing_bytes(store: Store, layers: list[Layer]) -> int:
    """Bytes still to download for `layers`: not stored, minus what partial files already hold."""
    return sum(max(0, layer.size - PartialBlob(store, layer).done_bytes())
               for layer in layers if not store.has_blob(layer.digest))


def check_free_space(store: Store, needed: int) -> None:
    """InsufficientSpaceError when the store's file system has fewer than `needed` free bytes."""
    where = Path(store.root)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed > free:
        raise InsufficientSpaceError(needed, free, str(store.root))


def pull(store: Store, name: str | ModelName, *, insecure: bool = False, registry: str | None = None,
         credentials: Credentials | None = None, progress: Progress | None = None,
         cancel: threading.Event | None = None, options: TransferOptions | None = None,
         hf_endpoint: str | None = None) -> PullResult:
    """Pull `name` (`[scheme://][host/][namespace/]model[:tag]`) into `store`.

    `registry` (CORRAL_REGISTRY) serves names on Ollama's default host; `insecure` allows plain
    http; `credentials` are sent only to the host they are filed under. Names on `hf.co` and
    `huggingface.co` go to Hugging Face (`hf_endpoint`, HF_ENDPOINT, when set), with its file API
    as the fallback (corral.registry.huggingface). `progress` receives each
    ProgressEvent on this thread; an exception it raises (KeyboardInterrupt included) stops the
    pull, as does setting `cancel` (TransferCancelledError), with partial downloads kept.

    Raises RegistryError subclasses (ManifestNotFoundError: `pull model manifest: file does not
    exist`; ManifestRejectedError; BlobTransferError; InsufficientSpaceError; ...), StoreError
    subclasses (InvalidNameError, DigestMismatchError for wrong bytes).
    """
    model = parse(name) if isinstance(name, str) else name
    model.filepath_parts()  # a ModelName built by hand is checked too
    options = options or TransferOptions()
    emit = progress or ignore
    cancel = cancel or threading.Event()
    if model.host.lower() in HUGGING_FACE_HOSTS:
        from corral.registry.huggingface import pull_hugging_face  # it builds on this module

        return pull_hugging_face(store, model, insecure=insecure, credentials=credentials, emit=emit,
                                 cancel=cancel, options=options, endpoint=hf_endpoint)
    endpoint = endpoint_for(model, insecure=insecure, registry=registry)
    credential = credentials.for_host(endpoint.host) if credentials is not None else None
    with RegistryClient(endpoint, model, credential=credential, insecure=insecure, timeout=options.timeout) as client:
        emit(ProgressEvent(PULLING_MANIFEST))
        manifest = check_manifest(client.get_manifest(options.limits), str(model), options.limits)
        downloaded = fetch_blobs(store, client, unique_blobs(manifest), options, emit, cancel)
    return write_pulled(store, model, manifest, downloaded, emit)


def fetch_blobs(store: Store, client: RegistryClient, blobs: list[Layer], options: TransferOptions,
                emit: Progress, cancel: threading.Event) -> int:
    """Download the `blobs` the store lacks through `client`, verified into blobs/; the bytes fetched.

    The free space is checked first; each blob is announced (`pulling <digest>`), skipped when
    stored, else fetched in parts; then `verifying sha256 digest` commits them all.
    """
    check_free_space(store, missing_bytes(store, blobs))
    fetched: list[PartialBlob] = []
    downloaded = 0
    try:
        for layer in blobs:
            if cancel.is_set():
                raise TransferCancelledError("pull")
            partial = PartialBlob(store, layer)
            if store.has_blob(layer.digest) or not partial.open(options):
                emit(layer_event("pulling", layer.digest, layer.size, layer.size))
                continue
            fetched.append(partial)
            emit(layer_event("pulling", layer.digest, layer.size, partial.completed))
            download = BlobDownload(client, partial, options, cancel)
            reported = [partial.completed]

            def report(done: int, layer: Layer = layer) -> None:
                reported[0] = done
                emit(layer_event("pulling", layer.digest, layer.size, done))

            try:
                download.run(report)
            finally:
                downloaded += download.downloaded
            if reported[0] != layer.size:
                emit(layer_event("pulling", layer.digest, layer.size, layer.size))
        emit(ProgressEvent(VERIFYING))
        for partial in fetched:
            partial.commit()
    finally:
        for partial in fetched:
            partial.close()
    return downloaded


def write_pulled(store: Store, model: ModelName, manifest: Manifest, downloaded: int, emit: Progress) -> PullResult:
    """The last steps of a pull: `writing manifest`, `success`."""
    emit(ProgressEvent(WRITING_MANIFEST))
    digest = store.write_manifest(model, manifest)
    emit(ProgressEvent(SUCCESS))
    return PullResult(name=model, digest=digest, manifest=manifest, downloaded=downloaded)
