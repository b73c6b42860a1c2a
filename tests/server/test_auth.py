"""API keys end to end on the live server (scripted engines): open without keys on loopback, 401,
403 and 429 bodies in each API's shape, the official clients with a key, usage counted from the
real responses, keys that change while the server runs, and HTTPS with a certificate made here."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from corral.auth.keys import KeyFile
from corral.auth.scopes import Scope
from corral.auth.usage import UsageFile
from tests.sealed import free_port
from tests.waiting import until

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "stream": False}


def add_key(fake, name: str, scope: Scope = Scope.INFERENCE, **limits) -> str:
    key, _ = KeyFile(fake.settings.models.parent).add(name, scope, **limits)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_a_loopback_server_is_open(fake):
    assert fake.client.get("/api/tags").status_code == 200
    assert fake.client.post("/api/chat", json=CHAT).status_code == 200
    assert fake.client.post("/api/copy", json={"source": "smol", "destination": "smol2"}).status_code == 200


@pytest.mark.parametrize("headers, message", [
    ({}, "missing API key: send it as 'Authorization: Bearer KEY'"),
    ({"Authorization": "Bearer corral_wrong"}, "invalid API key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing API key: send it as 'Authorization: Bearer KEY'"),
])
def test_once_a_key_exists_protected_routes_answer_401(fake, headers, message):
    add_key(fake, "team")  # created while the server runs: in force at the next request
    native = fake.client.post("/api/chat", json=CHAT, headers=headers)
    assert (native.status_code, native.json()) == (401, {"error": message})
    assert native.headers["www-authenticate"] == "Bearer"
    v1 = fake.client.get("/v1/models", headers=headers)
    assert (v1.status_code, v1.json()) == (401, {"error": {"message": message, "type": "api_error",
                                                           "param": None, "code": None}})
    assert fake.client.get("/").status_code == 200
    assert fake.client.get("/api/version").status_code == 200


def test_a_key_opens_its_scope_and_403_beyond_it(fake):
    user = add_key(fake, "user")
    ops = add_key(fake, "ops", Scope.ADMIN)
    assert fake.client.post("/api/chat", json=CHAT, headers=bearer(user)).status_code == 200
    assert fake.client.post("/api/show", json={"model": "smol"}, headers=bearer(user)).status_code == 200
    assert fake.client.get("/api/ps", headers=bearer(user)).status_code == 200
    copy = {"source": "smol", "destination": "smol2"}
    refused = fake.client.post("/api/copy", json=copy, headers=bearer(user))
    assert (refused.status_code, refused.json()) == (403, {"error": "API key 'user' has scope inference; "
                                                                    "this needs admin"})
    assert fake.client.request("DELETE", "/api/delete", json={"model": "smol"},
                               headers=bearer(user)).status_code == 403
    assert fake.client.post("/api/copy", json=copy, headers=bearer(ops)).status_code == 200
    assert fake.client.post("/api/chat", json=CHAT, headers=bearer(ops)).status_code == 200


def test_x_api_key_is_accepted_as_anthropic_clients_send_it(fake):
    key = add_key(fake, "claude")
    assert fake.client.post("/api/chat", json=CHAT, headers={"x-api-key": key}).status_code == 200


def test_a_key_limited_to_models_gets_403_for_others(fake):
    key = add_key(fake, "tools-only", models=["toolsmodel*"])
    assert fake.client.post("/api/chat", json={**CHAT, "model": "toolsmodel"}, headers=bearer(key)).status_code == 200
    r = fake.client.post("/v1/chat/completions", json={**CHAT, "model": "smol:latest"}, headers=bearer(key))
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "API key 'tools-only' may not use model 'smol:latest'"
    assert fake.client.get("/v1/models/smol", headers=bearer(key)).status_code == 403
    assert fake.client.get("/v1/models/toolsmodel", headers=bearer(key)).status_code == 200


def test_a_key_limited_to_models_lists_only_those(fake):
    key = add_key(fake, "tools-only", models=["toolsmodel*"])
    assert fake.client.post("/api/chat", json={**CHAT, "model": "smol"}).status_code == 401  # loaded: no
    admin = add_key(fake, "ops", Scope.ADMIN)
    fake.client.post("/api/chat", json={**CHAT, "model": "smol"}, headers=bearer(admin))  # smol is loaded
    fake.client.post("/api/chat", json={**CHAT, "model": "toolsmodel"}, headers=bearer(key))
    names = lambda r, field="models", key_="name": sorted(m[key_] for m in r.json()[field])  # noqa: E731
    assert names(fake.client.get("/api/tags", headers=bearer(key))) == ["toolsmodel:latest"]
    assert names(fake.client.get("/api/ps", headers=bearer(key))) == ["toolsmodel:latest"]
    assert names(fake.client.get("/v1/models", headers=bearer(key)), "data", "id") == ["toolsmodel:latest"]
    assert names(fake.client.get("/api/tags", headers=bearer(admin))) == ["smol:latest", "toolsmodel:latest"]
    assert names(fake.client.get("/api/ps", headers=bearer(admin))) == ["smol:latest", "toolsmodel:latest"]


def test_create_from_a_model_outside_the_patterns_is_403(fake):
    key = add_key(fake, "ops-smol", Scope.ADMIN, models=["smol*"])
    r = fake.client.post("/api/create", json={"model": "smol-mine", "from": "toolsmodel", "stream": False},
                         headers=bearer(key))
    assert (r.status_code, r.json()) == (403, {"error": "API key 'ops-smol' may not use model 'toolsmodel'"})
    ok = fake.client.post("/api/create", json={"model": "smol-mine", "from": "smol", "stream": False},
                          headers=bearer(key))
    assert ok.status_code == 200, ok.text


def test_every_model_a_body_names_must_match(fake):
    key = add_key(fake, "ops-smol", Scope.ADMIN, models=["smol*"])
    ok = fake.client.post("/api/copy", json={"source": "smol", "destination": "smol-copy"}, headers=bearer(key))
    assert ok.status_code == 200
    r = fake.client.post("/api/copy", json={"source": "toolsmodel", "destination": "smol2"}, headers=bearer(key))
    assert (r.status_code, r.json()) == (403, {"error": "API key 'ops-smol' may not use model 'toolsmodel'"})


def test_revoking_a_key_takes_effect_at_the_next_request(fake):
    key = add_key(fake, "gone")
    add_key(fake, "stays")
    assert fake.client.get("/api/tags", headers=bearer(key)).status_code == 200
    KeyFile(fake.settings.models.parent).remove("gone")
    assert fake.client.get("/api/tags", headers=bearer(key)).status_code == 401


def test_the_official_clients_work_with_a_key_and_fail_without(fake):
    key = add_key(fake, "clients")
    ok = openai.OpenAI(base_url=f"{fake.url}/v1", api_key=key, max_retries=0)
    reply = ok.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "".join(fake.engines.pieces)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{fake.url}/v1", api_key="corral_wrong", max_retries=0).models.list()

    native = ollama.Client(host=fake.url, headers=bearer(key))
    assert native.chat(model="smol", messages=[{"role": "user", "content": "Hi"}]).message.content == \
        "".join(fake.engines.pieces)
    with pytest.raises(ollama.ResponseError) as error:
        ollama.Client(host=fake.url).list()
    assert error.value.status_code == 401


def test_requests_per_minute_answer_429_with_retry_after(fake):
    key = add_key(fake, "slow", rpm=2)
    for _ in range(2):
        assert fake.client.get("/api/tags", headers=bearer(key)).status_code == 200
    native = fake.client.get("/api/tags", headers=bearer(key))
    assert (native.status_code, native.json()) == (429, {"error": "API key 'slow' made its 2 requests per minute"})
    assert 1 <= int(native.headers["retry-after"]) <= 30
    client = openai.OpenAI(base_url=f"{fake.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as error:
        client.models.list()
    assert error.value.response.headers["retry-after"].isdigit()


def test_tokens_per_minute_refuse_the_request_after_the_budget_is_spent(fake):
    script = fake.engines  # each chat uses prompt_eval_count + len(pieces) tokens
    per_request = script.prompt_eval_count + len(script.pieces)
    key = add_key(fake, "budget", tpm=per_request + 1)
    assert fake.client.post("/api/chat", json=CHAT, headers=bearer(key)).status_code == 200  # 1 token left
    assert fake.client.post("/api/chat", json={**CHAT, "stream": True}, headers=bearer(key)).status_code == 200
    refused = fake.client.post("/api/chat", json=CHAT, headers=bearer(key))
    assert refused.status_code == 429
    assert refused.json() == {"error": f"API key 'budget' used its {per_request + 1} tokens per minute"}
    assert int(refused.headers["retry-after"]) >= 1


def test_usage_is_counted_per_key_from_the_responses_and_kept_in_the_home(fake):
    a, b = add_key(fake, "a"), add_key(fake, "b")
    script = fake.engines
    fake.client.post("/api/chat", json=CHAT, headers=bearer(a))
    fake.client.post("/api/generate", json={"model": "smol", "prompt": "Hi"}, headers=bearer(a))  # streamed
    fake.client.post("/v1/completions", json={"model": "smol", "prompt": "Hi"}, headers=bearer(a))
    fake.client.post("/api/embed", json={"model": "smol", "input": ["x", "y"]}, headers=bearer(b))
    fake.client.get("/api/tags", headers=bearer(b))
    usage = UsageFile(fake.settings.models.parent)

    def counted():
        found = {name: u.to_json() for name, u in usage.read().items()}
        return found if found.get("b", {}).get("requests") == 2 and found.get("a", {}).get("generated_tokens") else None

    found = until(counted, timeout=30)
    assert found == {
        "a": {"requests": 3, "prompt_tokens": 3 * script.prompt_eval_count,
              "generated_tokens": 3 * len(script.pieces)},
        "b": {"requests": 2, "prompt_tokens": 2 * script.tokens_per_input, "generated_tokens": 0},
    }


@pytest.mark.parametrize("path, body", [
    ("/v1/messages", {"model": "smol", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/responses", {"model": "smol", "input": "Hi"}),
    ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}),
])
def test_every_generating_api_counts_its_tokens_against_the_key(fake, path, body):
    key = add_key(fake, "meter")
    script = fake.engines
    assert fake.client.post(path, json=body, headers=bearer(key)).status_code == 200
    usage = UsageFile(fake.settings.models.parent)
    found = until(lambda: usage.read().get("meter"), timeout=30)
    assert found.to_json() == {"requests": 1, "prompt_tokens": script.prompt_eval_count,
                               "generated_tokens": len(script.pieces)}


# -- the bind policy and TLS, through the real command -------------------------------------------

def corral(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "corral.cli.main", *args], env=env or dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_serve_on_every_address_without_a_key_refuses_to_start():
    proc = corral("serve", "--host", f"0.0.0.0:{free_port()}")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == ""
    assert err.splitlines() == [
        "error: refusing to listen on 0.0.0.0 without an API key: anyone who can reach it could use it",
        "hint: create one with `corral keys create NAME --scope admin` (or set CORRAL_API_KEYS), or pass "
        "--insecure-no-auth (CORRAL_INSECURE_NO_AUTH=1) to serve it open",
    ]


@pytest.mark.parametrize("args, error", [
    (["--tls-cert", "cert.pem"], "error: HTTPS needs both a certificate and its key"),
    (["--tls-cert", "cert.pem", "--tls-key", "nothing.pem"], "error: cannot load the TLS certificate cert.pem "
                                                              "and key nothing.pem: No such file or directory"),
])
def test_half_a_tls_pair_or_a_missing_file_refuses_to_start(tmp_path, args, error):
    proc = corral("serve", *args, cwd=tmp_path)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.splitlines()[0] == error
    assert str(tmp_path) not in err


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serve_speaks_https_with_a_certificate_and_a_key(tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = dict(os.environ)
    env["CORRAL_API_KEYS"] = "ops:corral_test_key:admin"
    proc = corral("serve", "--host", f"0.0.0.0:{port}", "--tls-cert", str(cert), "--tls-key", str(key), env=env)
    try:
        url = f"https://127.0.0.1:{port}"
        trust = ssl.create_default_context(cafile=str(cert))

        def version():
            if proc.poll() is not None:
                pytest.fail(f"corral serve ended: {proc.stderr.read()}")
            try:
                return httpx.get(f"{url}/api/version", verify=trust, timeout=2)
            except httpx.TransportError:
                return None

        assert until(version, timeout=60).status_code == 200
        with httpx.Client(base_url=url, verify=trust) as client:
            assert client.get("/api/tags").status_code == 401
            assert client.get("/api/tags", headers=bearer("corral_test_key")).status_code == 200
        with pytest.raises(httpx.ConnectError):  # the certificate is not one the system trusts
            httpx.get(f"{url}/api/version", timeout=5)
        with pytest.raises(httpx.RemoteProtocolError):  # plain http on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=5)
        cli = {**env, "CORRAL_HOST": url, "CORRAL_API_KEY": "corral_test_key"}
        listed = subprocess.run([sys.executable, "-m", "corral.cli.main", "list"], capture_output=True, text=True,
                                env={**cli, "CORRAL_CA_CERT": str(cert)}, timeout=60)
        assert (listed.returncode, listed.stderr) == (0, ""), listed.stderr
        untrusted = subprocess.run([sys.executable, "-m", "corral.cli.main", "list"], capture_output=True,
                                   text=True, env=cli, timeout=60)
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr
        assert "Traceback" not in untrusted.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_the_corral_client_sends_corral_api_key(fake, monkeypatch):
    from corral.cli.client import Client, ServerError

    key = add_key(fake, "cli")
    host = fake.url.removeprefix("http://")
    with Client(host) as client, pytest.raises(ServerError, match="missing API key") as error:
        client.tags()
    assert error.value.status == 401
    monkeypatch.setenv("CORRAL_API_KEY", key)
    with Client(host) as client:
        assert {m["name"] for m in client.tags()} >= {"smol:latest"}
