"""An interrupted pull (Ctrl-C, a cancel, a killed process) resumes without fetching again what it had."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corral.registry import pull
from corral.registry.errors import TransferCancelledError
from corral.registry.events import ProgressEvent
from corral.store.store import Store
from tests.registry.conftest import SMALL, STREAM
from tests.registry.hostile import MODEL, HostileRegistry, digest_of

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = os.urandom(600_000)
STALL = 50_000  # the registry sends this much of one part, then holds the connection open


@pytest.fixture
def registry():
    with HostileRegistry() as reg:
        reg.add_model("library/m:latest", [(MODEL, WEIGHTS)])
        reg.behaviour.stall_after = STALL
        yield reg


def sidecar(store: Store) -> Path:
    return store.blobs_dir / (store.blob_path(digest_of(WEIGHTS)).name + "-partial.json")


def recorded(store: Store) -> int:
    return sum(done for _, _, done in json.loads(sidecar(store).read_text())["parts"])


def interrupt_when_stalled(registry: HostileRegistry, error: BaseException):
    """A progress callback that raises `error` once everything the registry sent has arrived."""
    def progress(event: ProgressEvent) -> None:
        weights = event.digest == digest_of(WEIGHTS)
        if weights and registry.stalled.is_set() and event.completed == registry.sent(digest_of(WEIGHTS)):
            raise error
    return progress


@pytest.mark.parametrize("options", [SMALL, STREAM], ids=["parallel", "one-stream"])
@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("the caller's own failure")])
def test_an_interrupted_pull_resumes_from_its_partial_file(registry, tmp_path, error, options):
    store = Store(tmp_path / "models")
    name = f"{registry.host}/library/m"
    with pytest.raises(type(error)):
        pull(store, name, insecure=True, options=options, progress=interrupt_when_stalled(registry, error))
    first, had = registry.sent(digest_of(WEIGHTS)), recorded(store)
    # Everything that had arrived is kept (a part whose request was still in flight may lose that much).
    assert STALL <= had <= first < len(WEIGHTS)
    assert not store.has_blob(digest_of(WEIGHTS)) and not store.has_model(name)
    registry.release.set()
    result = pull(store, name, insecure=True, options=options)
    assert registry.sent(digest_of(WEIGHTS)) - first == len(WEIGHTS) - had  # only what was missing
    assert result.downloaded == len(WEIGHTS) - had + 2  # and the config blob
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS and not sidecar(store).exists()


def test_a_cancelled_pull_keeps_its_partial_file(registry, tmp_path):
    store = Store(tmp_path / "models")
    cancel = threading.Event()

    def progress(event: ProgressEvent) -> None:
        if registry.stalled.is_set():
            cancel.set()

    with pytest.raises(TransferCancelledError, match="pull cancelled"):
        pull(store, f"{registry.host}/library/m", insecure=True, options=SMALL, progress=progress, cancel=cancel)
    assert recorded(store) >= STALL


PULL = """
import sys
from pathlib import Path
from corral.registry import TransferOptions, pull
from corral.store.store import Store
options = TransferOptions(min_part_size=64 << 10, max_parts=8, retry_delay=0.01, timeout=60)
pull(Store(Path(sys.argv[1])), sys.argv[2], insecure=True, options=options)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_a_pull_in_a_process_that_dies_resumes_in_the_next(registry, tmp_path, sig):
    store = Store(tmp_path / "models")
    name = f"{registry.host}/library/m"
    process = subprocess.Popen([sys.executable, "-c", PULL, str(store.root), name], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # The sidecar is saved many times a second: wait until it records all that was sent.
        while not (registry.stalled.is_set() and sidecar(store).exists()
                   and recorded(store) == registry.sent(digest_of(WEIGHTS))):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the pull never stalled"
            time.sleep(0.05)
        process.send_signal(sig)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if sig == signal.SIGINT:
        assert b"KeyboardInterrupt" in process.stderr.read()
    first = registry.sent(digest_of(WEIGHTS))
    assert recorded(store) == first < len(WEIGHTS)
    registry.release.set()
    pull(store, name, insecure=True, options=SMALL)
    assert registry.sent(digest_of(WEIGHTS)) == len(WEIGHTS)  # every byte sent once, across both
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS


def test_a_damaged_sidecar_starts_the_blob_over(registry, tmp_path):
    store = Store(tmp_path / "models")
    registry.behaviour.stall_after = None
    store.blobs_dir.mkdir(parents=True)
    partial = store.blobs_dir / (store.blob_path(digest_of(WEIGHTS)).name + "-partial")
    partial.write_bytes(b"\xff" * len(WEIGHTS))
    sidecar(store).write_text('{"size": 600000, "parts": [[0, 600000, 600001]]}')  # claims too much
    pull(store, f"{registry.host}/library/m", insecure=True, options=SMALL)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    assert registry.sent(digest_of(WEIGHTS)) == len(WEIGHTS)


def test_two_pulls_of_one_model_at_once_download_it_once(registry, tmp_path):
    registry.behaviour.stall_after = None
    store = Store(tmp_path / "models")
    errors: list[BaseException] = []

    def one() -> None:
        try:
            pull(store, f"{registry.host}/library/m", insecure=True, options=SMALL)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert registry.sent(digest_of(WEIGHTS)) == len(WEIGHTS)
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
