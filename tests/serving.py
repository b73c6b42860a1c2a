"""`corral serve` as a user starts it, for the tests that talk to a real server process."""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from corral.cli.client import Client


@contextmanager
def corral_serve(script: str, env: dict[str, str], log_path: Path, *, timeout: float = 60) -> Iterator[subprocess.Popen]:
    """`corral serve` in `env` (its output in `log_path`), up and answering on CORRAL_HOST; stopped
    with Ctrl-C (SIGINT) afterwards, as a user stops it."""
    log = log_path.open("w")
    proc = subprocess.Popen([script, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with Client(env["CORRAL_HOST"]) as client:
            deadline = time.monotonic() + timeout
            while not client.is_running():
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"corral serve did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
