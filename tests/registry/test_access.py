"""The registry settings reach every caller: HF_ENDPOINT and HF_TOKEN from the environment, through
`corral pull` (no server) and through /api/pull, as they do through the library's background pulls."""

from __future__ import annotations

import httpx
import pytest

from corral.cli.main import main
from corral.config.settings import Settings
from corral.registry.access import RegistryAccess
from corral.server.app import create_app
from corral.store.store import Store
from tests.ggufs import write_tiny_llama
from tests.registry.fake_hf import FakeHuggingFace
from tests.registry.hostile import HostileRegistry, digest_of
from tests.server.live import LiveServer

TOKEN = "hf_settings_token"


@pytest.fixture
def hub(tmp_path):
    weights = write_tiny_llama(tmp_path / "w.gguf").read_bytes()
    with HostileRegistry() as cdn, FakeHuggingFace(cdn, token=TOKEN) as fake:
        fake.add_repo("owner/Tiny-GGUF", {"Tiny-Q4_K_M.gguf": weights})
        yield fake, weights


def authorizations(hub: FakeHuggingFace) -> set[str | None]:
    return {{k.lower(): v for k, v in s.headers.items()}.get("authorization") for s in hub.seen("/manifests/")}


def test_access_is_read_from_the_settings(tmp_path):
    settings = Settings(models=tmp_path / "home" / "models", registry="127.0.0.1:5000",
                        hf_endpoint="http://127.0.0.1:9", hf_token="t")
    access = RegistryAccess.from_settings(settings)
    assert (access.registry, access.hf_endpoint, access.hf_token, access.home) == (
        "127.0.0.1:5000", "http://127.0.0.1:9", "t", tmp_path / "home")
    assert access.credentials().for_host("hf.co").token == "t"
    assert access.credentials().for_host("127.0.0.1:5000") is None  # the token is Hugging Face's alone


def test_corral_pull_without_a_server_uses_hf_endpoint_and_hf_token(hub, monkeypatch, capsys):
    fake, weights = hub
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["pull", "hf.co/owner/Tiny-GGUF:Q4_K_M"]) == 0
    assert capsys.readouterr().err.rstrip().endswith("success")
    assert Store(Settings().models).blob_path(digest_of(weights)).read_bytes() == weights
    assert authorizations(fake) == {f"Bearer {TOKEN}"}


def test_api_pull_uses_the_servers_hf_settings(hub, tmp_path):
    fake, weights = hub
    settings = Settings(models=tmp_path / "models", hf_endpoint=fake.url, hf_token=TOKEN)
    with LiveServer(create_app(settings, name="corral_access")) as live:
        r = httpx.post(f"{live.url}/api/pull", json={"model": "hf.co/owner/Tiny-GGUF", "stream": False}, timeout=60)
        assert r.json() == {"status": "success"}
        names = [m["name"] for m in httpx.get(f"{live.url}/api/tags").json()["models"]]
    assert names == ["hf.co/owner/Tiny-GGUF:latest"]
    assert authorizations(fake) == {f"Bearer {TOKEN}"}
