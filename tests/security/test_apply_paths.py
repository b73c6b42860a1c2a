"""`/api/library/apply` names a folder on the server's machine, so only a client on that machine
may call it: from any other address it is a 403 that says nothing about the folder (whether it
exists or not), and the served library is unchanged."""

from __future__ import annotations

import socket

import httpx
import psutil
import pytest

from corral.config.settings import Settings
from corral.server.app import create_app
from tests.security.conftest import host_paths
from tests.server.live import LiveServer


def other_address() -> str:
    """An IPv4 address of this machine that is not loopback (a client 'from the network')."""
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    pytest.skip("this machine has no non-loopback IPv4 address to call from")


@pytest.fixture
def exposed(tmp_path):
    """A server listening on every address with auth waived (--insecure-no-auth), as a team might."""
    settings = Settings(models=tmp_path / "models", host="0.0.0.0:11434", insecure_no_auth=True,
                        library=tmp_path / "library")
    (tmp_path / "library").mkdir()
    app = create_app(settings, name="exposed")
    with LiveServer(app, host="0.0.0.0") as server:
        yield server, settings


@pytest.mark.parametrize("folder", ["existing", "missing", "/etc"])
def test_apply_from_another_address_is_refused_alike_for_any_folder(exposed, tmp_path, folder):
    server, settings = exposed
    (tmp_path / "existing").mkdir()
    path = folder if folder.startswith("/") else str(tmp_path / folder)
    with httpx.Client(base_url=f"http://{other_address()}:{server.port}", timeout=30) as client:
        r = client.post("/api/library/apply", json={"path": path, "dry_run": True})
        assert r.status_code == 403
        assert r.json() == {"error": "path: /api/library/apply names a folder on the server's machine, so "
                                     "only a client on that machine may call it: run `corral apply` there, "
                                     "or `git pull` into the served library folder"}
        assert not any(p in r.text for p in (str(tmp_path), "/etc"))
        assert client.get("/api/version").status_code == 200


def test_apply_from_the_servers_machine_still_plans(exposed, tmp_path):
    server, _ = exposed
    (tmp_path / "existing").mkdir()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
        r = client.post("/api/library/apply", json={"path": str(tmp_path / "existing"), "dry_run": True})
        assert r.status_code == 200, r.text
        assert r.json()["changes"] == []
