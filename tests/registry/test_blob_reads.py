"""How blob bytes are read: one stream that hands parts on when it is slow, TLS verified on every
hop of a blob read, a proxy from the environment honoured, bodies framed either way (a length,
chunks) and no longer than asked for, and kept-alive connections replaced when the server closed them."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from corral.registry import pull
from corral.registry.errors import BlobTransferError
from corral.registry.rawhttp import RawTransport
from corral.store.store import Store
from tests.loopback import LoopbackService, ServiceHandler
from tests.registry.conftest import SMALL, STREAM
from tests.registry.hostile import MODEL, HostileRegistry, digest_of

WEIGHTS = os.urandom(300_000)


def ranges(registry: HostileRegistry, digest: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in s.headers["Range"].removeprefix("bytes=").split("-"))
            for s in registry.seen(f"/blobs/{digest}")]


def test_a_slow_stream_hands_the_parts_after_it_to_parallel_parts(tmp_path):
    weights = os.urandom(2_000_000)  # eight parts of 250,000 bytes
    with HostileRegistry() as registry:
        registry.add_model("library/m:latest", [(MODEL, weights)])
        registry.behaviour.pace = 16 << 10  # ~1.6 MB/s: far below the ramp's speed, so parts join
        result = pull(Store(tmp_path / "models"), f"{registry.host}/library/m", insecure=True, options=STREAM)
        reads = ranges(registry, digest_of(weights))
    assert Store(tmp_path / "models").blob_path(digest_of(weights)).read_bytes() == weights
    assert result.downloaded == len(weights) + 2  # no byte written twice (and the config's two)
    assert reads[0] == (0, len(weights) - 1)  # one stream asked for everything...
    assert len(reads) > 1 and all(start % 250_000 == 0 and (end + 1) % 250_000 == 0 for start, end in reads[1:])
    # ...and the parts that joined took whole parts the stream had not begun.


# -- TLS -------------------------------------------------------------------------------------------

class Authority:
    """A certificate authority of the test's own, issuing server certificates for loopback."""

    def __init__(self, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (_builder(subject, subject, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def serve(self, service: LoopbackService, folder: Path, names: list[x509.GeneralName] | None = None) -> None:
        """Make `service` answer TLS with a certificate for 127.0.0.1 (or `names`) from this authority."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = names or [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback")]), self.cert.subject,
                         key.public_key())
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(self.key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        service.server.socket = context.wrap_socket(service.server.socket, server_side=True)
        service.url = f"https://{service.host}"


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1)))


@pytest.fixture
def tls(tmp_path, monkeypatch):
    """A registry over TLS whose blob reads redirect to a storage host over TLS; `trusted` is the CA
    bundle the client is given (SSL_CERT_FILE, as httpx reads it), the registry's authority alone."""
    ours, theirs = Authority("corral-test-ca"), Authority("another-ca")
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ours.pem())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with HostileRegistry() as registry, HostileRegistry() as storage:
        registry.add_model("library/m:latest", [(MODEL, WEIGHTS)])
        storage.blobs.update(registry.blobs)
        ours.serve(registry, tmp_path / "registry")
        yield registry, storage, ours, theirs, bundle


@pytest.mark.parametrize("options", [SMALL, STREAM], ids=["parallel", "one-stream"])
def test_blob_reads_over_tls_from_a_trusted_storage_host_are_stored(tls, tmp_path, options):
    registry, storage, ours, _, _ = tls
    ours.serve(storage, tmp_path / "storage")
    registry.behaviour.redirect_blobs = storage.url
    store = Store(tmp_path / "models")
    pull(store, f"{registry.host}/library/m", options=options)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    assert storage.seen("/storage/")


@pytest.mark.parametrize("issuer, names", [
    ("theirs", None),  # a certificate from an authority the client does not trust
    ("ours", [x509.DNSName("storage.example")]),  # a trusted one, for another name
])
def test_a_storage_host_whose_certificate_does_not_hold_gets_no_request(tls, tmp_path, issuer, names):
    registry, storage, ours, theirs, _ = tls
    (ours if issuer == "ours" else theirs).serve(storage, tmp_path / "storage", names)
    registry.behaviour.redirect_blobs = storage.url
    store = Store(tmp_path / "models")
    with pytest.raises(BlobTransferError, match="CERTIFICATE_VERIFY_FAILED"):
        pull(store, f"{registry.host}/library/m", options=SMALL)
    assert storage.seen("/storage/") == []  # the handshake failed before a request was sent
    assert not store.has_blob(digest_of(WEIGHTS)) and not store.has_model(f"{registry.host}/library/m")


# -- proxies -------------------------------------------------------------------------------------

class ForwardProxy(LoopbackService):
    """An HTTP forward proxy on loopback that records the URLs it is asked for."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        super().__init__(_ProxyHandler)


class _ProxyHandler(ServiceHandler):
    owner: ForwardProxy
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.owner.urls.append(self.path)
        target = urlsplit(self.path)  # a proxy is sent the absolute URL
        conn = http.client.HTTPConnection(target.netloc, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection", "host")}
        conn.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        self._send(answer.status, body, {k: v for k, v in answer.getheaders()
                                         if k.lower() not in ("content-length", "connection", "transfer-encoding")})


@pytest.mark.parametrize("options", [SMALL, STREAM], ids=["parallel", "one-stream"])
@pytest.mark.parametrize("bypass", [False, True], ids=["proxied", "no-proxy"])
def test_a_proxy_in_the_environment_carries_blob_reads_unless_no_proxy_says_otherwise(tmp_path, monkeypatch,
                                                                                        options, bypass):
    with HostileRegistry() as registry, ForwardProxy() as proxy:
        registry.add_model("library/m:latest", [(MODEL, WEIGHTS)])
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        if bypass:
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        store = Store(tmp_path / "models")
        pull(store, f"{registry.host}/library/m", insecure=True, options=options)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    blob_reads = [u for u in proxy.urls if f"/blobs/{digest_of(WEIGHTS)}" in u]
    if bypass:
        assert proxy.urls == []
    else:
        assert blob_reads and all(u.startswith(f"http://{registry.host}/v2/library/m/") for u in blob_reads)
        assert len(blob_reads) == len(registry.seen(f"/blobs/{digest_of(WEIGHTS)}"))  # each read went through it


# -- framing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [SMALL, STREAM], ids=["parallel", "one-stream"])
def test_chunked_blob_bodies_are_read_whole(tmp_path, options):
    with HostileRegistry() as registry:
        registry.add_model("library/m:latest", [(MODEL, WEIGHTS)])
        registry.behaviour.chunked = True
        store = Store(tmp_path / "models")
        pull(store, f"{registry.host}/library/m", insecure=True, options=options)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("options", [SMALL, STREAM], ids=["parallel", "one-stream"])
def test_a_body_longer_than_the_range_asked_for_is_refused(tmp_path, options, chunked):
    with HostileRegistry() as registry:
        registry.add_model("library/m:latest", [(MODEL, WEIGHTS)])
        registry.behaviour.chunked = chunked
        registry.behaviour.extra = b"\0" * 100_000
        store = Store(tmp_path / "models")
        with pytest.raises(BlobTransferError, match="sent more bytes than were asked for"):
            pull(store, f"{registry.host}/library/m", insecure=True, options=options)
    assert not store.has_blob(digest_of(WEIGHTS)) and not store.has_model(f"{registry.host}/library/m")


class _ClosesQuietly(ServiceHandler):
    """Answers every GET, then closes the connection without saying so (no `Connection: close`)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._send(200, b"answer", {})
        self.close_connection = True


def test_a_kept_alive_connection_the_server_closed_is_replaced_not_failed():
    with LoopbackService(_ClosesQuietly) as service:
        transport = RawTransport(ssl.create_default_context(), timeout=10, connect_timeout=10)
        try:
            for _ in range(3):
                resp = transport.send("GET", httpx.URL(f"{service.url}/x"), {})
                assert (resp.status_code, b"".join(resp.iter_raw())) == (200, b"answer")
                resp.close()  # read to its end: kept for the next request, which finds it closed
        finally:
            transport.close()
