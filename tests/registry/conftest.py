"""A real registry on loopback (Debian's CNCF distribution `docker-registry`), and models to move.

The registry runs from its binary with a config of our own (filesystem storage in a temporary
folder, plain http on a free 127.0.0.1 port, no auth); the package's system service is never used.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from corral.compiler.compile import CompileOptions
from corral.dsl import parse_modelfile
from corral.machine.gpus import GpuInventory
from corral.registry.download import TransferOptions
from corral.store.create import create_model
from corral.store.store import Store
from tests.ggufs import write_tiny_llama
from tests.sealed import free_port

CPU = CompileOptions(inventory=GpuInventory(reason="no GPU in the test"), memory_bytes=1 << 40)
BINARY = "docker-registry"

# Small parts and chunks, so a blob of a few hundred KB exercises parallel ranges and PATCH chunks
# (parallel parts from the start: no ramp); quick retries and short timeouts, so the hostile cases
# finish fast.
SMALL = TransferOptions(min_part_size=64 << 10, max_parts=8, parallel=4, fast_stream=0, retries=3,
                        retry_delay=0.01, timeout=10.0, interval=0.02, upload_chunk=128 << 10)
# The same with the default ramp: one stream reads the parts in order, parts join while it is slow.
STREAM = dataclasses.replace(SMALL, fast_stream=TransferOptions().fast_stream)

CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: corral-tests
"""


class DockerRegistry:
    def __init__(self, folder: Path, *, access_log: bool = False):
        """`access_log` keeps the registry's access log (a line per request, with the bytes sent) in `log_path`."""
        path = shutil.which(BINARY) or ("/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None)
        if path is None:
            pytest.fail("the tests need the CNCF distribution registry: apt-get install docker-registry", pytrace=False)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        (folder / "storage").mkdir(parents=True)
        config = folder / "config.yml"
        text = CONFIG.format(root=folder / "storage", port=self.port)
        config.write_text(text.replace("  accesslog:\n    disabled: true\n", "") if access_log else text)
        self.log_path = folder / "registry.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen([path, "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"docker-registry did not start: {(folder / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def docker_registry(tmp_path_factory):
    registry = DockerRegistry(tmp_path_factory.mktemp("docker-registry"))
    yield registry
    registry.stop()


def make_model(store: Store, name: str, folder: Path, weights: Path | None = None, *, seed: int = 0) -> None:
    """Create model `name` in `store` from a tiny random GGUF (or `weights`), with a few text layers."""
    folder.mkdir(parents=True, exist_ok=True)
    if weights is None:
        weights = write_tiny_llama(folder / f"tiny-{seed}.gguf", seed=seed)
    text = f"FROM {weights}\nPARAMETER temperature 0.2\nSYSTEM Be brief.\nLICENSE MIT\n"
    definition = parse_modelfile(text, str(folder / "Modelfile")).definition
    create_model(store, name, definition, base_dir=folder, options=CPU)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()
