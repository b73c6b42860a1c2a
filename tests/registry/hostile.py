"""A registry of our own on 127.0.0.1 that does what a real one will not.

It serves Ollama-style manifests and blobs (with Range), and on request: drops the connection
after N bytes of a blob, stalls after N bytes, serves other bytes than the digest names, answers
a huge or an endless manifest, redirects blob reads to another server, demands Basic or Bearer
authentication with a token realm anywhere. It takes pushes too (upload sessions: POST, PATCH,
PUT ?digest=, GET for the offset held; manifests by PUT), and can drop a PATCH part-way, keeping
what it read. It records every request (method, path, headers) and counts the blob bytes it sends,
so tests can see what a client sent where and what it re-fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from tests.loopback import LoopbackService, ServiceHandler

CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MODEL = "application/vnd.ollama.image.model"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(layers: list[tuple[str, bytes]], config: bytes = b"{}") -> bytes:
    doc = {"schemaVersion": 2, "mediaType": MANIFEST,
           "config": {"mediaType": CONFIG, "digest": digest_of(config), "size": len(config)},
           "layers": [{"mediaType": m, "digest": digest_of(d), "size": len(d)} for m, d in layers]}
    return json.dumps(doc).encode()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    sent: int = 0  # blob body bytes sent in answer


@dataclass
class Behaviour:
    drops: list[int] = field(default_factory=list)  # each blob GET takes one: send that many bytes, then drop
    stall_after: int | None = None  # once: send that many bytes of a blob, then hold the connection
    ignore_ranges: bool = False  # answer ranged blob reads with the whole blob (200)
    redirect_blobs: str | None = None  # base URL blob reads are redirected to (+ /storage/<digest>)
    basic: str | None = None  # the Authorization header /v2/ requires ("Basic ...")
    realm: str | None = None  # require a Bearer token, from this realm
    token: str = "a-token-for-the-registry"  # what /token hands out, and /v2/ accepts with a realm
    manifest_mode: str = ""  # "huge" (Content-Length), "huge-chunked", "endless"
    patch_drop_at: int | None = None  # once: a PATCH reaching this upload offset keeps the bytes before it, then drops
    pace: int | None = None  # send blob bytes this many at a time, 10 ms apart (a slow link)
    chunked: bool = False  # send blob bodies with Transfer-Encoding: chunked, without a length
    extra: bytes = b""  # sent after a blob body's bytes, as part of the body


class HostileRegistry(LoopbackService):
    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}  # "namespace/model:tag" -> bytes
        self.blobs: dict[str, bytes] = {}  # digest -> the bytes served for it
        self.uploads: dict[str, bytearray] = {}  # upload session id -> the bytes it holds
        self.behaviour = Behaviour()
        self.requests: list[Seen] = []
        self.served = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets a stalled blob read end
        self.stalled = threading.Event()  # set once a blob read has stalled
        super().__init__(_Handler)

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        super().__exit__(*exc)

    def add_model(self, repo_tag: str, layers: list[tuple[str, bytes]], config: bytes = b"{}") -> bytes:
        data = manifest_bytes(layers, config)
        self.manifests[repo_tag] = data
        for blob in [config, *(d for _, d in layers)]:
            self.blobs[digest_of(blob)] = blob
        return data

    def seen(self, path_part: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.requests if path_part in s.path]

    def sent(self, path_part: str) -> int:
        """Blob bytes sent in answer to requests whose path holds `path_part`."""
        with self.lock:
            return sum(s.sent for s in self.requests if path_part in s.path)


_MANIFEST_PATH = re.compile(r"^/v2/([^/]+/[^/]+)/manifests/([^/?]+)$")
_BLOB_PATH = re.compile(r"^/v2/[^/]+/[^/]+/blobs/([^/?]+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
_UPLOADS_PATH = re.compile(r"^/v2/([^/]+/[^/]+)/blobs/uploads/([^/?]*)$")


class _Handler(ServiceHandler):
    owner: HostileRegistry
    protocol_version = "HTTP/1.1"

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client went away (or we dropped it on purpose)
            pass

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._push()

    def do_PATCH(self) -> None:
        self._push()

    def do_PUT(self) -> None:
        self._push()

    def _handle(self) -> None:
        reg, b = self.owner, self.owner.behaviour
        seen = Seen(self.command, self.path, dict(self.headers.items()))
        with reg.lock:
            reg.requests.append(seen)
        path = self.path.split("?", 1)[0]
        if path == "/token":
            return self._json(200, {"token": b.token})
        if path.startswith("/storage/"):
            return self._blob(path.removeprefix("/storage/"), seen)
        if not path.startswith("/v2/"):
            return self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        if b.basic is not None and self.headers.get("Authorization") != b.basic and b.realm is None:
            return self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                              {"WWW-Authenticate": 'Basic realm="hostile"'})
        if b.realm is not None and self.headers.get("Authorization") != f"Bearer {b.token}":
            challenge = f'Bearer realm="{b.realm}",service="hostile",scope="repository:library/m:pull"'
            return self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                              {"WWW-Authenticate": challenge})
        if path == "/v2/":
            return self._json(200, {})
        if match := _MANIFEST_PATH.match(path):
            return self._manifest(f"{match.group(1)}:{match.group(2)}")
        if (match := _UPLOADS_PATH.match(path)) and match.group(2) in reg.uploads:
            held = len(reg.uploads[match.group(2)])
            return self._send(204, b"", {"Location": path, "Range": f"0-{held - 1}"})
        if match := _BLOB_PATH.match(path):
            if b.redirect_blobs is not None:
                return self._send(307, b"", {"Location": f"{b.redirect_blobs}/storage/{match.group(1)}"})
            return self._blob(match.group(1), seen)
        return self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})

    def _push(self) -> None:
        """An upload session (POST, PATCH, PUT ?digest=) or a manifest PUT, as the distribution API has them."""
        reg, b = self.owner, self.owner.behaviour
        with reg.lock:
            reg.requests.append(Seen(self.command, self.path, dict(self.headers.items())))
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        if self.command == "PUT" and (match := _MANIFEST_PATH.match(path)):
            reg.manifests[f"{match.group(1)}:{match.group(2)}"] = self.rfile.read(length)
            return self._send(201, b"", {})
        match = _UPLOADS_PATH.match(path)
        if match is None:
            return self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        if self.command == "POST":
            session = f"s{len(reg.uploads)}"
            reg.uploads[session] = bytearray()
            return self._send(202, b"", {"Location": f"/v2/{match.group(1)}/blobs/uploads/{session}"})
        held = reg.uploads.get(match.group(2))
        if held is None:
            return self._json(404, {"errors": [{"code": "BLOB_UPLOAD_UNKNOWN", "message": "upload unknown"}]})
        with reg.lock:
            drop, b.patch_drop_at = b.patch_drop_at, None
        if self.command == "PATCH" and drop is not None and len(held) < drop < len(held) + length:
            held += self.rfile.read(drop - len(held))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if drop is not None:
            b.patch_drop_at = drop  # not this request's: keep it for a later PATCH
        held += self.rfile.read(length)
        if self.command == "PATCH":
            return self._send(202, b"", {"Location": path, "Range": f"0-{len(held) - 1}"})
        digest = parse_qs(query).get("digest", [""])[0]
        if digest != digest_of(bytes(held)):
            return self._json(400, {"errors": [{"code": "DIGEST_INVALID", "message": "digest did not match"}]})
        reg.blobs[digest] = bytes(reg.uploads.pop(match.group(2)))
        return self._send(201, b"", {"Location": f"/v2/{match.group(1)}/blobs/{digest}"})

    def _manifest(self, key: str) -> None:
        reg, mode = self.owner, self.owner.behaviour.manifest_mode
        if mode in ("huge", "huge-chunked", "endless"):
            self.send_response(200)
            self.send_header("Content-Type", MANIFEST)
            if mode == "huge":
                self.send_header("Content-Length", str(64 << 20))
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            filler = b" " * (64 << 10)
            try:
                for _ in range(10_000 if mode == "endless" else (5 << 20) // len(filler)):
                    self.wfile.write(filler)
            except OSError:
                pass
            return
        data = reg.manifests.get(key)
        if data is None:
            return self._json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
        self._send(200, data, {"Content-Type": MANIFEST})

    def _blob(self, digest: str, seen: Seen) -> None:
        reg, b = self.owner, self.owner.behaviour
        data = reg.blobs.get(digest)
        if data is None:
            return self._json(404, {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]})
        start, end = 0, len(data) - 1
        match = _RANGE.match(self.headers.get("Range", ""))
        ranged = match is not None and not b.ignore_ranges
        if ranged:
            start, end = int(match.group(1)), min(int(match.group(2)), len(data) - 1)
        body = data[start:end + 1] + b.extra
        self.send_response(206 if ranged else 200)
        if b.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if b.chunked:  # whole, in pieces of 50,000 (drops and stalls are for bodies with a length)
            return self._chunked(body, seen)
        with reg.lock:
            budget = b.drops.pop(0) if b.drops else None
            stall, b.stall_after = b.stall_after, None
        limit = min(x for x in (budget, stall, len(body)) if x is not None)
        step = b.pace or limit or 1
        for at in range(0, limit, step):  # counted as sent piece by piece: a client may hang up midway
            piece = body[at:min(at + step, limit)]
            self.wfile.write(piece)
            self.wfile.flush()
            with reg.lock:
                reg.served += len(piece)
                seen.sent += len(piece)
            if b.pace:
                time.sleep(0.01)
        if limit == len(body):
            return
        if stall is not None and limit == stall:
            reg.stalled.set()
            reg.release.wait(30)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _chunked(self, body: bytes, seen: Seen) -> None:
        for at in range(0, len(body), 50_000):
            piece = body[at:at + 50_000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        with self.owner.lock:
            self.owner.served += len(body)
            seen.sent += len(body)


def stalling_at_half(weights: bytes, repo_tag: str = "ns/m:1") -> HostileRegistry:
    """A registry serving one model whose weights read stalls halfway until `release` is set
    (use it with `with`); for tests that look at a pull while it is under way."""
    registry = HostileRegistry()
    registry.add_model(repo_tag, [(MODEL, weights)])
    registry.behaviour.stall_after = len(weights) // 2
    return registry
