"""Model management routes of the native API: tags, show, ps, create, copy, delete, blobs, pull,
push, version.

Registered on the /api blueprint by ollama_api.blueprint(). Store work (hashing, copying large
files, compiling) and registry transfers run in worker threads so the event loop keeps serving
other requests; their progress comes back through a queue (`_threaded`) and streams as Ollama's
NDJSON status objects. A client that goes away mid-pull cancels it (the partial files stay, and the
next pull resumes them). A pull, or a create that pulled its `from` model, writes the manifest into
the store the server reads, so the model is listed and runs from the next request on.

Credentials for registries are read from `<home>/credentials.json`, where `<home>` is the folder
that holds the store (`~/.corral` for the default `~/.corral/models`), and from Docker's
config.json (corral.registry.credentials).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from contextlib import aclosing
from functools import partial
from pathlib import Path
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from sanic import Blueprint, Request
from sanic.exceptions import PayloadTooLarge, RequestTimeout
from sanic.response import HTTPResponse, empty, json as json_response

from corral.config.version import OLLAMA_API_VERSION, corral_version
from corral.registry.access import RegistryAccess
from corral.registry.events import SUCCESS, ProgressEvent
from corral.compiler.gguf.check import check_gguf
from corral.compiler.gguf.info import show_metadata
from corral.compiler.resolve import DIGEST, looks_like_path
from corral.store.names import is_valid_name, parse as parse_name, parse_digest
from corral.server.errors import BadRequestError, native_body
from corral.server.guard import visible
from corral.sources.describe import parameters_text
from corral.runtime.scheduler import cpu_reason
from corral.server.metrics import processor
from corral.server.schemas import CopyBody, CreateBody, DeleteBody, ShowBody, TransferBody, parse_body
from corral.server.streaming import NDJSON, LazyStream, ndjson_line, pump, rfc3339nano

if TYPE_CHECKING:
    from corral.server.app import AppContext

log = logging.getLogger(__name__)

# Go's time.Now().Add(math.MaxInt64): how Ollama shows "loaded until stopped" in /api/ps.
_FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)


def register(bp: Blueprint) -> None:
    bp.add_route(tags, "/tags", methods=["GET", "HEAD"])
    bp.add_route(show, "/show", methods=["POST"])
    bp.add_route(ps, "/ps", methods=["GET"])
    bp.add_route(create, "/create", methods=["POST"])
    bp.add_route(copy, "/copy", methods=["POST"])
    bp.add_route(delete, "/delete", methods=["DELETE"])
    bp.add_route(blob_exists, "/blobs/<digest>", methods=["HEAD"])
    bp.add_route(blob_upload, "/blobs/<digest>", methods=["POST"], stream=True)
    bp.add_route(version_route, "/version", methods=["GET", "HEAD"])
    bp.add_route(pull, "/pull", methods=["POST"])
    bp.add_route(push, "/push", methods=["POST"])


async def version_route(request: Request) -> HTTPResponse:
    """The Ollama API level Corral speaks (clients gate features on it), and Corral's own version."""
    return json_response({"version": OLLAMA_API_VERSION, "corral_version": corral_version()})


Status = dict[str, Any]
Emit = Callable[[Status], None]


async def pull(request: Request) -> HTTPResponse | None:
    """Ollama's /api/pull: `pulling manifest`, `pulling <12 hex>` per layer, `verifying sha256 digest`,
    `writing manifest`, `success`."""
    body = parse_body(request.body, TransferBody)
    ctx = request.app.ctx
    cancel = threading.Event()
    updates = _threaded(lambda emit: _pull(ctx, body.model, body.insecure, emit, cancel), cancel)
    return await _statuses(request, body.stream, updates)


async def push(request: Request) -> HTTPResponse | None:
    """Ollama's /api/push: `retrieving manifest`, `pushing <12 hex>` per layer, `pushing manifest`, `success`."""
    body = parse_body(request.body, TransferBody)
    ctx = request.app.ctx
    cancel = threading.Event()

    def work(emit: Emit) -> None:
        RegistryAccess.from_settings(ctx.settings).push(ctx.store, body.model, insecure=body.insecure,
                                                        progress=_events_to(emit), cancel=cancel)

    return await _statuses(request, body.stream, _threaded(work, cancel))


def _events_to(emit: Emit) -> Callable[[ProgressEvent], None]:
    return lambda event: emit(event.to_json())


def _pull(ctx: AppContext, name: str, insecure: bool, emit: Emit, cancel: threading.Event) -> None:
    """Pull `name` into the server's store (on a worker thread), its events to `emit`."""
    RegistryAccess.from_settings(ctx.settings).pull(ctx.store, name, insecure=insecure,
                                                    progress=_events_to(emit), cancel=cancel)


async def _statuses(request: Request, stream: bool, updates: AsyncIterator[Status]) -> HTTPResponse | None:
    """Stream status objects as NDJSON, or (`stream: false`) answer the last one alone.

    An error before the first object answers its own HTTP status; after it, a last `{"error"}` line.
    """
    if not stream:
        last: Status = {"status": SUCCESS}
        async with aclosing(updates) as it:
            async for last in it:
                pass
        return json_response(last)
    await pump(LazyStream(request, NDJSON), updates, lambda status: [ndjson_line(status)],
               lambda e: ndjson_line(native_body(e)))
    return None


async def _threaded(work: Callable[[Emit], Any], cancel: threading.Event | None = None) -> AsyncIterator[Status]:
    """Run `work(emit)` in a thread, yielding what it emits; its error is raised after the last one.

    Closing the iterator early (the client went away) sets `cancel`, which the work is to honour.
    """
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[Status] = asyncio.Queue()

    def emit(item: Status) -> None:
        loop.call_soon_threadsafe(updates.put_nowait, item)

    task = asyncio.ensure_future(asyncio.to_thread(work, emit))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even when nobody waits
    try:
        # The thread's emits are queued on the loop before its completion is, so none is lost.
        while not (task.done() and updates.empty()):
            getter = asyncio.ensure_future(updates.get())
            try:
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()
        task.result()  # raises the work's error
    finally:
        if not task.done() and cancel is not None:
            cancel.set()


async def tags(request: Request) -> HTTPResponse:
    listings = await asyncio.to_thread(request.app.ctx.models.list)
    listings = sorted(listings, key=lambda m: m.modified_at, reverse=True)
    return json_response({"models": [
        {"name": m.name, "model": m.model, "modified_at": rfc3339nano(m.modified_at), "size": m.size,
         "digest": m.digest, "details": m.details, "capabilities": m.capabilities}
        for m in listings if visible(request, m.name)]})


async def show(request: Request) -> HTTPResponse:
    """Ollama's /api/show; `template_jinja` (Corral's) is what runs when `template` is a Go template,
    and `error` says why a library model's latest edit is not the version described."""
    body = parse_body(request.body, ShowBody)
    info = await asyncio.to_thread(partial(request.app.ctx.models.show, body.model, verbose=body.verbose))
    projector = await asyncio.to_thread(_projector_info, info.spec, body.verbose)
    parameters = info.parameters
    if body.options and info.spec is not None:  # Ollama shows a request's options merged into the model's
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in body.options.items()}
        merged = {**info.spec.parameters, **given}
        parameters = parameters_text(info.spec.model_copy(update={"parameters": merged}))
    out: dict[str, Any] = {
        "license": info.license, "modelfile": info.modelfile, "parameters": parameters,
        "template": info.template, "template_jinja": info.template_jinja,
        "system": body.system if body.system is not None else info.system,
        "details": info.details, "model_info": info.model_info, "projector_info": projector, "tensors": info.tensors,
        "capabilities": info.capabilities, "modified_at": rfc3339nano(info.modified_at), "error": info.error,
        # the definition's PARSER and REQUIRES, under the names Ollama's show gives them
        "parser": info.spec.parser if info.spec else None, "requires": info.spec.requires if info.spec else None,
    }
    if info.messages:
        out["messages"] = info.messages
    return json_response({k: v for k, v in out.items() if v not in ("", None) or k == "model_info"})


def _projector_info(spec: Any, verbose: bool) -> dict[str, Any] | None:
    """Ollama's `projector_info`: a vision model's projector GGUF metadata, as `model_info` is the model's."""
    if spec is None or spec.projector is None:
        return None
    return show_metadata([check_gguf(Path(spec.projector.path))], verbose=verbose)


async def ps(request: Request) -> HTTPResponse:
    now = datetime.now(timezone.utc)
    scheduler = request.app.ctx.scheduler
    running = scheduler.running()
    gpus = getattr(getattr(scheduler, "settings", None), "gpus", 0)
    rows = []
    for r in running:
        if not visible(request, r.name):
            continue
        expires = r.expires_at if r.expires_at is not None else now + _FOREVER
        spec = r.spec
        rows.append({"name": r.name, "model": r.name, "size": r.size, "digest": request.app.ctx.models.digest_of(spec),
                     "details": _details(spec), "expires_at": rfc3339nano(expires), "size_vram": r.size_vram,
                     "context_length": spec.load.num_ctx, **_processor(spec, gpus)})
    rows.sort(key=lambda row: row["expires_at"], reverse=True)
    return json_response({"models": rows})


def _processor(spec: Any, gpus: int) -> dict[str, str]:
    """Corral's additions to a /api/ps row: where the model runs (cpu, gpu, cpu+gpu), and why it
    runs on the CPU when the machine has a GPU."""
    plan = spec.plan
    where = processor(plan.backend, plan.n_gpu_layers, plan.layer_count)
    if where == "cpu" and gpus:
        return {"processor": where, "cpu_reason": cpu_reason(spec)}
    return {"processor": where}


def _details(spec: Any) -> dict[str, Any]:
    m = spec.model
    return {"parent_model": "", "format": "gguf", "family": m.architecture, "families": [m.architecture],
            "parameter_size": m.parameter_size, "quantization_level": m.quantization}


async def create(request: Request) -> HTTPResponse | None:
    body = parse_body(request.body, CreateBody)
    if not body.from_ and not body.files:
        raise BadRequestError("neither 'from' or 'files' was specified")
    if body.remote_host:  # Ollama's proxy to a model on another server; Corral serves only what it holds
        raise BadRequestError("remote_host: Corral does not serve remote models; pull the model and create "
                              "from it instead", param="remote_host")
    if body.adapters and len(body.adapters) > 1:
        raise BadRequestError("only one adapter is currently supported", param="adapters")
    for field, files in (("files", body.files), ("adapters", body.adapters)):
        for filename, digest in (files or {}).items():
            if filename.startswith("/") or ".." in filename.replace("\\", "/").split("/"):
                raise BadRequestError("file path must be relative", param=field)
            parse_digest(digest)
    fields = body.model_dump(by_alias=True, exclude_none=True, exclude={"model", "stream", "insecure", "remote_host"})
    if body.from_ and not body.files:
        _check_from(body.from_)
    updates = _create_progress(request.app.ctx, body.model, fields, body.insecure)
    return await _statuses(request, body.stream, updates)


_NOT_A_PATH = ("from must be a model name or the digest of an uploaded blob (sha256:<64 hex digits>); "
               "over HTTP a path on the server is never read: upload the file with POST /api/blobs/<digest> "
               "and name it in 'files', as `corral create` does")


def _check_from(value: str) -> None:
    """A request's `from` must be a blob digest or a model name: a path is refused with one message
    whatever is there, so the answer says nothing of the server's files (CVE-2024-39719)."""
    if not DIGEST.match(value) and (looks_like_path(value) or not is_valid_name(value)):
        raise BadRequestError(_NOT_A_PATH, param="from")


def _as_name(store_root: Path, value: str) -> str:
    """A checked `from` as the compiler is to read it: a name that is also a path under the store
    root (`blobs`, `manifests/...`), where the compiler looks for files, in its full form."""
    if DIGEST.match(value) or not (store_root / value).exists():
        return value
    return str(parse_name(value))


async def _create_progress(ctx: AppContext, name: str, fields: dict[str, Any],
                           insecure: bool) -> AsyncIterator[Status]:
    """Run the store's create in a thread, yielding its progress as Ollama status objects; a `from`
    model the store lacks is pulled first, its statuses interleaved (all but its `success`)."""
    from corral.store.create import create_from_request

    cancel = threading.Event()

    def work(emit: Emit) -> None:
        def say(status: str | Status, **extra: Any) -> None:
            emit(dict(status) if isinstance(status, dict) else {"status": status, **extra})

        def pulled(item: Status) -> None:
            if item.get("status") != SUCCESS:
                emit(item)

        if isinstance(fields.get("from"), str) and not fields.get("files"):
            fields["from"] = _as_name(ctx.settings.models, fields["from"])  # the store's root
        create_from_request(ctx.store, ctx.models, name, fields, say,
                            fetch=lambda base: _pull(ctx, base, insecure, pulled, cancel))

    last = None
    async with aclosing(_threaded(work, cancel)) as it:
        async for last in it:
            yield last
    if last is None or last.get("status") != SUCCESS:
        yield {"status": SUCCESS}


async def copy(request: Request) -> HTTPResponse:
    from corral.store.create import copy_model

    body = parse_body(request.body, CopyBody)
    await asyncio.to_thread(copy_model, request.app.ctx.store, body.source, body.destination)
    return empty(status=200)


async def delete(request: Request) -> HTTPResponse:
    from corral.store.create import delete_models

    body = parse_body(request.body, DeleteBody)
    await asyncio.to_thread(delete_models, request.app.ctx.store, [body.model])
    return empty(status=200)


async def blob_exists(request: Request, digest: str) -> HTTPResponse:
    parsed = parse_digest(digest)
    if not await asyncio.to_thread(request.app.ctx.store.has_blob, parsed):
        from corral.store.errors import BlobNotFoundError

        raise BlobNotFoundError(digest)
    return empty(status=200)


_ABORT = object()


async def _put(chunks: queue.Queue[Any], item: Any, writer: asyncio.Future[Any]) -> None:
    """Queue `item` for the writer thread without blocking the loop; raise the writer's error if it failed."""
    while True:
        try:
            chunks.put_nowait(item)
            return
        except queue.Full:
            if writer.done():
                await writer
            await asyncio.sleep(0.002)


async def _read(request: Request, timeout: float) -> bytes | None:
    """The next chunk of a streamed body; a client that sends nothing for `timeout` seconds is cut off."""
    try:
        return await asyncio.wait_for(request.stream.read(), timeout)
    except asyncio.TimeoutError:
        raise RequestTimeout("the upload stalled (CORRAL_READ_TIMEOUT)") from None


async def blob_upload(request: Request, digest: str) -> HTTPResponse:
    """Store the body as a blob, checking its sha256; 201 when stored, 200 when already there.

    The body may not exceed CORRAL_MAX_BLOB_SIZE (413 at the header when its length says so, or as
    soon as the bytes read pass it) nor pause longer than CORRAL_READ_TIMEOUT; either way the
    writer drops its temporary file, so nothing of the upload stays in the store."""
    settings = request.app.ctx.settings
    store = request.app.ctx.store
    parsed = parse_digest(digest)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > settings.max_blob_size:
        raise PayloadTooLarge(f"the blob is larger than the {settings.max_blob_size} bytes allowed "
                              "(CORRAL_MAX_BLOB_SIZE)")
    if await asyncio.to_thread(store.has_blob, parsed):
        return empty(status=200)
    request.stream.request_max_size = settings.max_blob_size  # Sanic lifts it for streamed bodies
    chunks: queue.Queue[Any] = queue.Queue(maxsize=64)

    def produce():
        while (item := chunks.get()) is not None:
            if item is _ABORT:
                raise ConnectionAbortedError("the upload was cut off")
            yield item

    writer = asyncio.ensure_future(asyncio.to_thread(store.put_blob_stream, produce(), parsed))
    writer.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved when the upload was cut off
    try:
        while (data := await _read(request, settings.read_timeout)) is not None:
            await _put(chunks, data, writer)
        # Not a blocking put in a worker thread: with as many uploads as the pool has threads, all of
        # them would be writers waiting for this end mark, and the mark would wait for a thread.
        await _put(chunks, None, writer)
    except BaseException:
        # Let the writer thread see the end and drop its temp file (it may be blocked on a full queue).
        threading.Thread(target=chunks.put, args=(_ABORT,), daemon=True).start()
        raise
    await writer
    return empty(status=201)
