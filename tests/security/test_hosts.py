"""Browser protections: the Host check against DNS rebinding, and CORS refusals (server/hosts.py)."""

from __future__ import annotations

import pytest

from tests.security.conftest import assert_refused

PASS = ["localhost", "localhost:11434", "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:1", "[::1]", "[::1]:11434",
        "app.localhost", "a.b.localhost:3000", "LOCALHOST", "localhost."]
REFUSED = ["evil.example", "evil.example:11434", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.1",
           "0.0.0.0", "[::2]", "localhost:port", "[::1", "evillocalhost"]


@pytest.mark.parametrize("host", PASS)
def test_loopback_names_pass(fake, host):
    assert fake.client.get("/api/tags", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", REFUSED)
@pytest.mark.parametrize("path", ["/api/tags", "/v1/models"])
def test_other_names_get_403(fake, host, path):
    body = assert_refused(fake, fake.client.get(path, headers={"Host": host}), 403)
    message = body["error"]["message"] if path.startswith("/v1") else body["error"]
    assert message == ("this server does not answer requests for that host name; "
                       "add it to CORRAL_ALLOWED_HOSTS to allow it")


def test_a_refused_host_reaches_no_handler(fake):
    r = fake.client.post("/api/chat", headers={"Host": "evil.example"},
                         json={"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert_refused(fake, r, 403)
    assert fake.engines.requests == []


@pytest.mark.parametrize("host, status", [("models.example.com", 200), ("a.internal.example", 200),
                                          ("evil.example", 403), ("localhost", 200)])
def test_allowed_hosts_add_names(serve, host, status):
    server = serve(allowed_hosts=["models.example.com", "*.internal.example"])
    assert server.client.get("/api/tags", headers={"Host": host}).status_code == status


def test_allowed_hosts_read_from_a_comma_list():
    from corral.config.settings import Settings

    assert Settings(allowed_hosts=" a.example, *.b.example ,").allowed_hosts == ["a.example", "*.b.example"]


def test_a_non_loopback_server_checks_no_name(serve):
    server = serve(host="0.0.0.0:11434")  # /api/version: the key check (server/guard.py) leaves it open
    assert server.client.get("/api/version", headers={"Host": "gpu-box.lan"}).status_code == 200


def test_a_non_loopback_server_checks_names_when_configured(serve):
    server = serve(host="0.0.0.0:11434", allowed_hosts=["gpu-box.lan"])
    assert server.client.get("/api/version", headers={"Host": "gpu-box.lan:11434"}).status_code == 200
    assert_refused(server, server.client.get("/api/version", headers={"Host": "evil.example"}), 403)


# -- CORS --------------------------------------------------------------------------------------

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


@pytest.mark.parametrize("origin", ["http://localhost:5173", "https://127.0.0.1", "app://corral", "tauri://localhost",
                                    "vscode-webview://abc", "file://"])
def test_preflight_from_an_allowed_origin(fake, origin):
    r = fake.client.options("/api/chat", headers={"Origin": origin, **PREFLIGHT})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-credentials" not in r.headers


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "null",
                                    "http://127.0.0.1.evil.example"])
def test_preflight_from_another_origin_is_refused(fake, origin):
    r = fake.client.options("/api/chat", headers={"Origin": origin, **PREFLIGHT})
    assert_refused(fake, r, 403)
    assert "access-control-allow-origin" not in r.headers


def test_a_request_from_another_origin_is_refused_before_it_runs(fake):
    r = fake.client.post("/api/chat", headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
                         content=b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}]}')
    assert_refused(fake, r, 403)
    assert fake.engines.requests == []


def test_the_servers_own_origin_passes(fake):
    r = fake.client.get("/api/tags", headers={"Origin": fake.url})
    assert r.status_code == 200


def test_a_wildcard_origin_is_echoed_never_star(serve):
    server = serve(origins="*")
    r = server.client.get("/api/tags", headers={"Origin": "https://anything.example"})
    assert r.headers["access-control-allow-origin"] == "https://anything.example"
    assert r.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in r.headers
