"""Blob reads over the standard library's http.client: a read is one recv, up to 1 MiB, at once.

httpx hands a body out in 64 KiB pieces, each copied through h11's buffer and passed up through
httpcore and httpx; for a blob of gigabytes that per-piece work cost about as much CPU as hashing
it (bench/pull.py: ~0.5 s/GB of 1.8). `HTTPResponse.read1` returns what one recv gives (up to
READ_SIZE) as one bytes object, which the downloader writes with pwrite as it is.

The registry client sends every hop of a blob GET through RawTransport when it carries the URL, so
its rules on redirects and credentials stay in one place (corral.registry.client.send); requests
go over the client's own SSL context, so TLS is verified as its httpx requests are. A URL that a
proxy set in the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) would carry is left to
httpx, which honours them. Failures are raised as httpx's transport errors, the one vocabulary the
client and the downloader handle.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.request
from typing import Callable, Iterator

import httpx

READ_SIZE = 1 << 20  # the most one read returns: what one recv gives, and never more than this
DRAIN_LIMIT = 64 << 10  # an unread body this small (a redirect's) is read, to keep its connection
DRAIN_TIMEOUT = 1.0  # seconds the drain may wait for those bytes before the connection is dropped
IDLE_PER_ORIGIN = 8  # kept-alive connections held per scheme, host and port

Key = tuple[str, str, int]


class RawResponse:
    """A response whose headers are read; its body is read with `read1` (or `iter_raw`), then closed."""

    def __init__(self, url: httpx.URL, response: http.client.HTTPResponse, sock: socket.socket | None,
                 done: Callable[[], None]):
        self.url = url
        self.status_code = response.status
        self.headers = httpx.Headers(response.getheaders())
        self._response = response
        self._sock = sock
        self._done: Callable[[], None] | None = done  # hands the connection back (or closes it), once

    def read1(self, size: int = READ_SIZE) -> bytes:
        """At most `size` bytes of the body from one recv (b"" at its end, or where the peer stopped)."""
        try:
            return self._response.read1(size)
        except TimeoutError as e:
            raise httpx.ReadTimeout("timed out reading the body") from e
        except (OSError, http.client.HTTPException) as e:
            raise httpx.ReadError(str(e) or type(e).__name__) from e

    def iter_raw(self, size: int = 64 << 10) -> Iterator[bytes]:
        while chunk := self.read1(size):
            yield chunk

    def close(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    def hang_up(self) -> None:
        """Shut the socket down, so a thread blocked reading it returns at once."""
        try:
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class RawTransport:
    """GETs and HEADs over http.client, with a few kept-alive connections per origin; thread-safe."""

    def __init__(self, ssl_context: ssl.SSLContext, *, timeout: float, connect_timeout: float):
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: dict[Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def carries(self, url: httpx.URL) -> bool:
        """Whether `url` goes direct: False when the environment names a proxy for it (httpx's job then)."""
        proxies = urllib.request.getproxies_environment()
        if not (proxies.get(url.scheme) or proxies.get("all")):
            return True
        return bool(urllib.request.proxy_bypass_environment(url.host, proxies))

    def send(self, method: str, url: httpx.URL, headers: dict[str, str]) -> RawResponse:
        """Send a request without a body; the response's headers are read, its body not yet."""
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        target = url.raw_path.decode("ascii")
        while True:
            conn, reused = self._checkout(key)
            try:
                conn.request(method, target, headers=headers)
                sock = conn.sock
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused:
                    continue  # a kept-alive connection the server had closed: try a fresh one
                raise _transport_error(e, "sending the request") from e
            return RawResponse(url, response, sock, lambda: self._checkin(key, conn, response))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _checkout(self, key: Key) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            conns = self._idle.get(key, [])
            while conns:
                conn = conns.pop()
                if conn.sock is not None and not _readable(conn.sock):
                    return conn, True
                conn.close()  # closed by the server (readable at EOF), or sent something unasked
        scheme, host, port = key
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.connect_timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _transport_error(e, "connecting", connecting=True) from e
        conn.sock.settimeout(self.timeout)
        return conn, False

    def _checkin(self, key: Key, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Keep the connection when its response was read to the end (or nearly), else close it."""
        left = response.length
        try:
            if not response.isclosed() and not response.chunked and left is not None and left <= DRAIN_LIMIT:
                if conn.sock is not None:
                    conn.sock.settimeout(DRAIN_TIMEOUT)
                response.read()
                if conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
        except (OSError, http.client.HTTPException):
            response.close()
            conn.close()
            return
        keep = response.isclosed() and conn.sock is not None and not response.will_close
        response.close()
        if keep:
            with self._lock:
                conns = self._idle.setdefault(key, [])
                if len(conns) < IDLE_PER_ORIGIN:
                    conns.append(conn)
                    return
        conn.close()


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server's EOF (or bytes nobody asked for)."""
    try:
        poller = select.poll()  # not select(): it refuses descriptors past 1024, which a busy server has
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _transport_error(error: BaseException, doing: str, connecting: bool = False) -> httpx.TransportError:
    text = str(error) or f"{type(error).__name__} while {doing}"
    if isinstance(error, TimeoutError):
        return httpx.ConnectTimeout(text) if connecting else httpx.ReadTimeout(text)
    if isinstance(error, ssl.SSLError) or connecting:
        return httpx.ConnectError(text)
    return httpx.ReadError(text)
