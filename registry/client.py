"""An HTTP client for one repository of one registry: the OCI distribution API as Ollama speaks it.

    GET  {scheme}://{host}/v2/{namespace}/{model}/manifests/{tag}    Accept: docker manifest v2
    GET  .../blobs/{digest}                 Range: bytes=a-b; may redirect to a storage host
    HEAD .../blobs/{digest}                 push: skip a blob the registry has
    POST .../blobs/uploads/  ->  PATCH {Location} (Content-Range a-b)  ->  PUT {Location}?digest=
    PUT  .../manifests/{tag}                Content-Type: docker manifest v2

A name's host decides the registry (`registry.ollama.ai` unless the name says otherwise;
`registry=` points that default host at a mirror). Every request goes over https unless the
caller passed `insecure`, which switches to plain http (as Ollama's `--insecure` does); a name,
redirect or realm that asks for http without it raises InsecureRegistryError.

Redirects are followed here, not by httpx, so that one rule holds for every hop: the
Authorization header (a credential, or a token got for this registry) is attached only when the
URL's origin is the registry's own (see corral.registry.auth). A 401 from the registry is
answered once per request, from its WWW-Authenticate challenge. A blob GET's hops go through
corral.registry.rawhttp (the same rules, the same SSL context, far less CPU a byte) unless a
proxy from the environment applies to the URL, which httpx honours.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import httpx

from corral.store.manifest import MediaType
from corral.store.names import DEFAULT_HOST, Digest, ModelName
from corral.registry.auth import Origin, snippet, fetch_token, parse_challenge
from corral.registry.credentials import Credential
from corral.registry.errors import (
    InsecureRegistryError,
    ManifestNotFoundError,
    RegistryAuthError,
    RegistryResponseError,
    RegistryUnreachableError,
)
from corral.registry.manifests import Limits, read_bounded
from corral.registry.rawhttp import RawResponse, RawTransport

USER_AGENT = "corral/0.1 (ollama-compatible)"
MAX_REDIRECTS = 10
MAX_ERROR_BODY = 64 << 10
REDIRECTS = (301, 302, 303, 307, 308)

Body = bytes | Callable[[], Iterable[bytes]] | None
"""A request body: bytes, or a function that makes a fresh iterator (so a 401 retry can resend it)."""

Response = httpx.Response | RawResponse
"""A streamed response: httpx's, or rawhttp's for blob reads (status_code, headers, iter_raw, close)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A registry's base address: `https` or `http`, and `host[:port]`."""

    scheme: str
    host: str

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    @property
    def origin(self) -> Origin:
        return Origin.of(self.url("/"))


def endpoint_for(name: ModelName, *, insecure: bool = False, registry: str | None = None) -> Endpoint:
    """Where `name` lives: its host (the default host mapped to `registry` when given), over https.

    `registry` is `[scheme://]host[:port]` (CORRAL_REGISTRY). `insecure` switches to http; an
    explicit `http://` in the name or in `registry` without `insecure` raises InsecureRegistryError.
    """
    scheme, host = (name.scheme or "https").lower(), name.host
    if registry and host.lower() == DEFAULT_HOST:
        text = registry.strip().rstrip("/")
        given, sep, rest = text.partition("://")
        scheme, host = (given.lower(), rest) if sep else ("https", text)
    name.filepath_parts()  # every part checked: they become the URL's path
    if scheme not in ("http", "https"):
        raise RegistryResponseError(f"registry {host}", 0, f"the scheme {scheme!r} is not http or https")
    if insecure:
        scheme = "http"
    elif scheme == "http":
        raise InsecureRegistryError(f"http://{host}")
    return Endpoint(scheme, host)


class RegistryClient:
    """Requests to one repository (`namespace/model`) of one registry; thread-safe, reusable."""

    def __init__(self, endpoint: Endpoint, name: ModelName, *, credential: Credential | None = None,
                 insecure: bool = False, push: bool = False, timeout: float = 60.0):
        self.endpoint = endpoint
        self.name = name
        self.repository = f"{name.namespace}/{name.model}"
        self.credential = credential
        self.insecure = insecure
        self.scope = f"repository:{self.repository}:" + ("pull,push" if push else "pull")
        self._lock = threading.Lock()
        self._authorization: str | None = f"Bearer {credential.token}" if credential and credential.token else None
        # One SSL context (httpx's defaults: certifi, or SSL_CERT_FILE / SSL_CERT_DIR) for both transports.
        self.ssl_context: ssl.SSLContext = httpx.create_ssl_context()
        self.http = httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT}, verify=self.ssl_context,
                                 timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)))
        self.raw = RawTransport(self.ssl_context, timeout=timeout, connect_timeout=min(timeout, 15.0))

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.raw.close()

    # -- transport -------------------------------------------------------------------------------

    def send(self, method: str, url: str, *, headers: dict[str, str] | None = None, content: Body = None,
             raw: bool = False) -> Response:
        """A streamed response (the caller closes it), after redirects and at most one 401 answer.

        `raw` (a request without a body) sends each hop through rawhttp where it carries the URL.
        """
        target = httpx.URL(url if "://" in url else self.endpoint.url(url))
        answered = False
        for _ in range(MAX_REDIRECTS + 1):
            if target.scheme == "http" and not self.insecure:
                raise InsecureRegistryError(str(target))
            if target.scheme not in ("http", "https"):
                raise RegistryResponseError(f"{method} {self.repository}", 0, f"redirected to {target.scheme}:")
            same = Origin.of(target) == self.endpoint.origin
            sent = {"Accept-Encoding": "identity", **(headers or {})}
            with self._lock:
                authorization = self._authorization
            if same and authorization:
                sent["Authorization"] = authorization
            try:
                if raw and content is None and self.raw.carries(target):
                    resp: Response = self.raw.send(method, target, {"User-Agent": USER_AGENT, **sent})
                else:
                    body = content() if callable(content) else content
                    request = self.http.build_request(method, target, headers=sent, content=body)
                    resp = self.http.send(request, stream=True)
            except httpx.TransportError as e:
                raise RegistryUnreachableError(target.host, _describe(e)) from e
            if resp.status_code == 401 and same and not answered:
                challenge = resp.headers.get("www-authenticate", "")
                resp.close()
                self._answer(challenge)
                answered = True
                continue
            if resp.status_code in REDIRECTS and "location" in resp.headers:
                resp.close()
                target = target.join(resp.headers["location"])
                if resp.status_code == 303 and method != "HEAD":
                    method, content = "GET", None
                continue
            return resp
        raise RegistryResponseError(f"{method} {self.repository}", 0, f"more than {MAX_REDIRECTS} redirects")

    def _answer(self, header: str) -> None:
        """Set the Authorization the registry's 401 challenge asks for, or raise RegistryAuthError."""
        challenge = parse_challenge(header)
        host = self.endpoint.host
        if challenge is not None and challenge.scheme == "basic":
            if self.credential is None or self.credential.basic is None:
                raise RegistryAuthError(host, "the registry needs a username and password")
            value = self.credential.basic
        elif challenge is not None and challenge.scheme == "bearer" and challenge.realm:
            token = fetch_token(self.http, challenge, registry=self.endpoint.origin, registry_host=host,
                                credential=self.credential, default_scope=self.scope, insecure=self.insecure)
            value = f"Bearer {token}"
        else:
            raise RegistryAuthError(host, f"unauthorized, and the challenge {header!r} names no way to log in")
        with self._lock:
            self._authorization = value

    def fail(self, resp: Response, what: str) -> RegistryResponseError | RegistryAuthError:
        """The error for an unexpected answer (the response is read a little, then closed)."""
        try:
            body = read_bounded(resp.iter_raw(), MAX_ERROR_BODY, what)
        except Exception:
            body = b""
        finally:
            resp.close()
        detail = _registry_message(body)
        if resp.status_code in (401, 403):
            return RegistryAuthError(self.endpoint.host, f"{what}: {resp.status_code}" + (f": {detail}" if detail else ""))
        return RegistryResponseError(what, resp.status_code, detail)

    # -- pull --------------------------------------------------------------------------------------

    def get_manifest(self, limits: Limits = Limits()) -> bytes:
        """The manifest's bytes for the name's tag, read within `limits.max_manifest_bytes`."""
        path = f"/v2/{self.repository}/manifests/{self.name.tag}"
        resp = self.send("GET", path, headers={"Accept": MediaType.MANIFEST.value})
        try:
            if resp.status_code == 404:
                raise ManifestNotFoundError(str(self.name))
            if resp.status_code != 200:
                raise self.fail(resp, "pull model manifest")
            return read_bounded(resp.iter_raw(), limits.max_manifest_bytes, str(self.name),
                                resp.headers.get("content-length"))
        except httpx.TransportError as e:
            raise RegistryUnreachableError(self.endpoint.host, _describe(e)) from e
        finally:
            resp.close()

    def open_blob(self, digest: Digest, start: int, end: int) -> Response:
        """A streamed GET of bytes `start..end` (inclusive) of a blob; the caller checks and closes it."""
        return self.send("GET", f"/v2/{self.repository}/blobs/{digest}", headers={"Range": f"bytes={start}-{end}"},
                         raw=True)

    # -- push --------------------------------------------------------------------------------------

    def blob_exists(self, digest: Digest) -> bool:
        resp = self.send("HEAD", f"/v2/{self.repository}/blobs/{digest}")
        if resp.status_code == 200:
            resp.close()
            return True
        if resp.status_code == 404:
            resp.close()
            return False
        raise self.fail(resp, f"check blob {digest.short}")

    def start_upload(self) -> str:
        """A new upload session's absolute URL."""
        resp = self.send("POST", f"/v2/{self.repository}/blobs/uploads/", headers={"Content-Length": "0"})
        return self._location(resp, (202,), "start upload")

    def upload_chunk(self, location: str, chunk: Callable[[], Iterator[bytes]], start: int, length: int) -> str:
        """PATCH `length` bytes at offset `start`; returns the session's next URL."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                   "Content-Range": f"{start}-{start + length - 1}"}
        return self._location(self.send("PATCH", location, headers=headers, content=chunk), (202,), "upload chunk")

    def upload_offset(self, location: str) -> tuple[str, int]:
        """Where a session stands: its URL, and how many bytes the registry holds (its `Range: 0-N`)."""
        resp = self.send("GET", location)
        held = resp.headers.get("range", "")
        url = self._location(resp, (204,), "upload status", default=location)
        _, _, last = held.partition("-")
        return url, int(last) + 1 if last.isdigit() else 0

    def finish_upload(self, location: str, digest: Digest, chunk: Callable[[], Iterator[bytes]] | None = None,
                      length: int = 0) -> None:
        """PUT `?digest=` to close the session (with the last bytes, or the whole blob, as `chunk`)."""
        url = httpx.URL(location).copy_merge_params({"digest": str(digest)})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        resp = self.send("PUT", str(url), headers=headers, content=chunk if chunk is not None else b"")
        if resp.status_code not in (201, 204):
            raise self.fail(resp, f"finish upload of {digest.short}")
        resp.close()

    def put_manifest(self, data: bytes) -> None:
        headers = {"Content-Type": MediaType.MANIFEST.value}
        resp = self.send("PUT", f"/v2/{self.repository}/manifests/{self.name.tag}", headers=headers, content=data)
        if resp.status_code not in (200, 201, 202):
            raise self.fail(resp, "push model manifest")
        resp.close()

    def _location(self, resp: httpx.Response, ok: tuple[int, ...], what: str, default: str | None = None) -> str:
        if resp.status_code not in ok:
            raise self.fail(resp, what)
        resp.close()
        location = resp.headers.get("location") or default
        if not location:
            raise RegistryResponseError(what, resp.status_code, "the registry sent no Location")
        return str(resp.url.join(location))


def _registry_message(body: bytes) -> str:
    """The `errors[0].message` of a registry's JSON error body (or Ollama's `error`), else a snippet."""
    try:
        data = httpx.Response(200, content=body).json()
    except ValueError:
        return snippet(body) if body else ""
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message") or errors[0].get("code") or "")
        if isinstance(data.get("error"), str):
            return data["error"]
    return snippet(body)


def _describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text
