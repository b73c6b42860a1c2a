"""A small client for the native API (Corral's and Ollama's) at CORRAL_HOST, and the one answer
to "is a server running?" (`running_server`) that every command asks.

The address comes in as an argument (the command passes `Settings.host`); nothing here reads the
environment. Exception tree (httpx's exceptions are mapped here, in `_send`, and nowhere else):

    CorralError                      (corral.errors)
     +-- ClientError                 talking to the server failed
          +-- ServerUnreachableError nothing answers at the address (connection refused, timeout)
          +-- ServerError            the server answered `{"error": "..."}`; carries its status and message
               +-- NotFoundError     404: no such model (or blob)

Every method is synchronous and streams where the API streams: `chat`, `create`, `pull` and `push` yield the NDJSON
objects as they arrive, and closing the iterator (Ctrl-C included) closes the connection, which is
how the server learns to stop generating.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, TypedDict

import httpx

from corral.errors import CorralError
from corral.config.settings import DEFAULT_PORT, parse_host

CONNECT_TIMEOUT = 2.0  # seconds; a local server accepts at once
PROBE_TIMEOUT = 0.5  # is_running(): a refused connection returns at once, this bounds the rest
READ_TIMEOUT = None  # a model load or a long answer may take minutes between two lines


class ClientError(CorralError):
    """Talking to the server failed."""


class ServerUnreachableError(ClientError):
    """No server answers at the address."""

    def __init__(self, url: str, reason: str = ""):
        self.url = url
        self.reason = reason
        super().__init__(f"no Corral server is running at {url}" + (f" ({reason})" if reason else ""),
                         "start one with `corral serve`")

    def __reduce__(self):
        return (type(self), (self.url, self.reason))


class ServerError(ClientError):
    """The server answered with an error body; `message` is the server's own text."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.status, self.message))


class NotFoundError(ServerError):
    """404: the model (or blob) does not exist on the server."""


class Message(TypedDict, total=False):
    role: str
    content: str
    thinking: str
    images: list[str]
    tool_calls: list[dict[str, Any]]


class ChatChunk(TypedDict, total=False):
    """One line of /api/chat's stream; the last one has done=true and the statistics (ns)."""

    model: str
    created_at: str
    message: Message
    done: bool
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class ModelDetails(TypedDict, total=False):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class ListedModel(TypedDict, total=False):
    """One model of /api/tags."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class RunningModel(TypedDict, total=False):
    """One model of /api/ps."""

    name: str
    model: str
    size: int
    size_vram: int
    digest: str
    details: ModelDetails
    expires_at: str
    context_length: int
    processor: str  # Corral's: cpu, gpu or cpu+gpu
    cpu_reason: str  # Corral's: why a model runs on the CPU of a machine with a GPU


class ShowResponse(TypedDict, total=False):
    modelfile: str
    parameters: str
    template: str
    system: str
    license: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    messages: list[Message]
    modified_at: str
    tensors: list[dict[str, Any]]  # with verbose
    template_jinja: str  # Corral's: what runs, when `template` is a Go template
    error: str  # Corral's: why a library model's latest edit is not the version shown


class Progress(TypedDict, total=False):
    """One status line of /api/create (and pull/push)."""

    status: str
    digest: str
    total: int
    completed: int


def base_url(host: str | None = None) -> str:
    """The URL a client uses for `host` (CORRAL_HOST's forms; None: the default address), by the
    server's own parsing rules.

    A server bound to every address (0.0.0.0, ::) is reached on the loopback address.
    """
    text = (host or "").strip().strip("\"'")
    scheme = "https" if text.lower().startswith("https://") else "http"
    name, port = parse_host(text) if text else ("127.0.0.1", DEFAULT_PORT)
    name = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(name, name)
    if ":" in name:
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}"


def trusted_certificates() -> ssl.SSLContext | bool:
    """What an https:// server's certificate is checked against: CORRAL_CA_CERT, else the system's CAs."""
    from pydantic import ValidationError

    from corral.config.settings import Settings

    try:
        ca = Settings().ca_cert
    except ValidationError:
        return True
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        raise ClientError(f"CORRAL_CA_CERT: {ca.name} cannot be read as PEM certificates ({e.strerror or e})",
                          hint="point CORRAL_CA_CERT at the server's certificate file (PEM)") from None


def configured_api_key() -> str | None:
    """CORRAL_API_KEY (Settings.api_key): what every client sends when not given a key."""
    from pydantic import ValidationError

    from corral.config.settings import Settings

    try:
        return Settings().api_key
    except ValidationError:  # the command has reported its bad settings already
        return None


def running_server(host: str | None) -> Client | None:
    """A client for the server at `host` when one answers at once, else None.

    The one test of "is a server running?": `corral run` and the store commands use the server
    when it answers and work in this process otherwise; `ps` and `stop` need one.
    """
    client = Client(host)
    if client.is_running():
        return client
    client.close()
    return None


class Client:
    """The native API at one address. Use as a context manager, or call `close()`."""

    def __init__(self, host: str | None = None, *, api_key: str | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.url = base_url(host)
        key = api_key if api_key is not None else configured_api_key()
        self._http = httpx.Client(
            base_url=self.url, transport=transport, trust_env=False, verify=trusted_certificates(),
            headers={"Authorization": f"Bearer {key}"} if key else None,
            timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=60.0, pool=60.0),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the boundary: httpx in, Corral errors out ------------------------------------------------
    @contextmanager
    def _send(self, method: str, path: str, body: Any = None, *, content: Iterator[bytes] | None = None,
              stream: bool = False, timeout: httpx.Timeout | None = None) -> Iterator[httpx.Response]:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            request = self._http.build_request(method, path, **kwargs)
            response = self._http.send(request, stream=stream)
            try:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                yield response
            finally:
                response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            self._refuse_untrusted(e)
            raise ServerUnreachableError(self.url) from e
        except httpx.TimeoutException as e:
            raise ClientError(f"the server at {self.url} did not answer in time") from e
        except httpx.HTTPError as e:
            raise ClientError(f"the connection to {self.url} failed: {e}") from e

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        with self._send(method, path, body) as response:
            response.read()
            return response.json() if response.content else None

    def _lines(self, path: str, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The objects of an NDJSON stream; an `{"error": ...}` line raises ServerError."""
        # A connection that breaks mid-stream raises inside _send's `with`, where it is mapped.
        with self._send("POST", path, body, stream=True) as response:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and "error" in item:
                    raise ServerError(response.status_code, str(item["error"]))
                yield item

    def _refuse_untrusted(self, error: BaseException) -> None:
        """A server that answers with a certificate this machine does not trust is not "no server":
        the CLI would otherwise start its own engine and hide the problem."""
        seen: BaseException | None = error
        while seen is not None:
            if isinstance(seen, ssl.SSLCertVerificationError):
                raise ClientError(f"the server at {self.url} has a certificate this machine does not trust "
                                  f"({seen.verify_message})",
                                  "set CORRAL_CA_CERT to the server's certificate (PEM)") from error
            seen = seen.__cause__ or seen.__context__

    # -- the API ----------------------------------------------------------------------------------
    def is_running(self) -> bool:
        """True when a server answers `GET /` at once (`running_server` asks it)."""
        try:
            response = self._http.get("/", timeout=httpx.Timeout(PROBE_TIMEOUT))
        except httpx.HTTPError as e:
            self._refuse_untrusted(e)
            return False
        return response.status_code == 200

    def chat(self, model: str, messages: list[Message], *, options: Mapping[str, Any] | None = None,
             format: str | dict | None = None, keep_alive: str | float | None = None,
             tools: list[dict] | None = None, think: bool | str | None = None) -> Iterator[ChatChunk]:
        """Stream /api/chat: the pieces of the answer, then the final object with statistics."""
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        for key, value in (("options", options), ("format", format), ("keep_alive", keep_alive),
                           ("tools", tools), ("think", think)):
            if value is not None:
                body[key] = value
        return self._lines("/api/chat", body)  # type: ignore[return-value]

    def generate(self, model: str, prompt: str = "", *, keep_alive: str | float | None = None,
                 options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """/api/generate without streaming (an empty prompt loads, or unloads with keep_alive 0)."""
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if options is not None:
            body["options"] = options
        return self._json("POST", "/api/generate", body)

    def embed(self, model: str, inputs: list[str], *, keep_alive: str | float | None = None,
              dimensions: int | None = None) -> list[list[float]]:
        """/api/embed: one (normalized) vector per input, cut to `dimensions` when given."""
        body: dict[str, Any] = {"model": model, "input": inputs}
        for key, value in (("keep_alive", keep_alive), ("dimensions", dimensions)):
            if value is not None:
                body[key] = value
        return self._json("POST", "/api/embed", body)["embeddings"]

    def ps(self) -> list[RunningModel]:
        return self._json("GET", "/api/ps")["models"]

    def tags(self) -> list[ListedModel]:
        return self._json("GET", "/api/tags")["models"]

    def show(self, model: str, *, verbose: bool = False) -> ShowResponse:
        return self._json("POST", "/api/show", {"model": model, "verbose": verbose})

    def create(self, model: str, **fields: Any) -> Iterator[Progress]:
        """Stream /api/create's statuses (`from`, `files`, `template`, `system`, ... as the API names them)."""
        body = {"model": model, "stream": True, **{k: v for k, v in fields.items() if v is not None}}
        return self._lines("/api/create", body)  # type: ignore[return-value]

    def pull(self, model: str, *, insecure: bool = False) -> Iterator[Progress]:
        """Stream /api/pull's statuses; closing the iterator stops the pull (what it fetched is kept)."""
        return self._lines("/api/pull", {"model": model, "insecure": insecure, "stream": True})  # type: ignore[return-value]

    def push(self, model: str, *, insecure: bool = False) -> Iterator[Progress]:
        """Stream /api/push's statuses."""
        return self._lines("/api/push", {"model": model, "insecure": insecure, "stream": True})  # type: ignore[return-value]

    def has_blob(self, digest: str) -> bool:
        try:
            with self._send("HEAD", f"/api/blobs/{digest}"):
                return True
        except NotFoundError:
            return False

    def push_blob(self, digest: str, path: os.PathLike[str] | str) -> None:
        """Upload a file as the blob `digest` (the server checks the hash)."""
        with open(path, "rb") as f:
            with self._send("POST", f"/api/blobs/{digest}", content=_chunks(f),
                            timeout=httpx.Timeout(CONNECT_TIMEOUT, read=None, write=None, pool=None)):
                pass

    def library(self) -> dict[str, Any]:
        """GET /api/library: the served library folder and each model's state."""
        return self._json("GET", "/api/library")

    def apply(self, path: str, *, dry_run: bool = False) -> dict[str, Any]:
        """POST /api/library/apply: plan (dry_run) or reconcile the library to the folder `path`."""
        return self._json("POST", "/api/library/apply", {"path": path, "dry_run": dry_run})

    def copy(self, source: str, destination: str) -> None:
        self._json("POST", "/api/copy", {"source": source, "destination": destination})

    def delete(self, model: str) -> None:
        self._json("DELETE", "/api/delete", {"model": model})


def parse_time(text: str) -> datetime:
    """A timestamp of the API (RFC 3339 with up to nanoseconds, as Go writes it), timezone-aware."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip().replace("Z", "+00:00"))
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _chunks(f) -> Iterator[bytes]:
    while block := f.read(1 << 20):
        yield block


def _error_of(response: httpx.Response) -> ServerError:
    """The server's `{"error": "..."}` as a ServerError; any other body is quoted as it came."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
    except ValueError:
        pass
    if not message:
        message = response.text.strip() or f"HTTP {response.status_code} {response.reason_phrase}"
    cls = NotFoundError if response.status_code == 404 else ServerError
    return cls(response.status_code, message)
