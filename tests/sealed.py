"""A sealed environment for tests: their own home, caches, config, store, library and server address.

Nothing a test runs may read or write what the user has: `~/.corral`, `~/.cache/corral`, the
checkout's `library/`, or a `corral serve` of theirs on port 11434. `seal(root)` points every
variable Corral (and the libraries it uses) reads for such state at folders under `root`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

# Variables a test may inherit from the user unchanged: they say how, not where.
KEPT_CORRAL = {"CORRAL_TEST_MODELS", "CORRAL_OMP_WAIT_POLICY"}
FOLDERS = {
    "HOME": "home",
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_STATE_HOME": "state",
}


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sealed_environment(root: Path, base: dict[str, str] | None = None, *, port: int | None = None,
                       library: bool = True) -> dict[str, str]:
    """`base` (default: os.environ) with every place Corral keeps state moved under `root`.

    CORRAL_HOST names a free port, so a client finds no server unless the test starts one there, and
    CORRAL_REGISTRY another, so a pull of a default-host name reaches no registry unless a test sets one;
    with `library`, CORRAL_LIBRARY is an empty folder, so `corral serve` never picks up the
    checkout's library/ (its default in a checkout).
    """
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("CORRAL_") or k in KEPT_CORRAL}
    for variable, folder in FOLDERS.items():
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        env[variable] = str(path)
    env["CORRAL_MODELS"] = str(root / "home" / ".corral" / "models")
    env["CORRAL_HOST"] = f"127.0.0.1:{port if port is not None else free_port()}"
    env["CORRAL_NOHISTORY"] = "1"
    env.pop("OLLAMA_HOST", None)  # read when CORRAL_HOST is unset: a test that unsets it gets the default
    # Names on Ollama's default host (what `corral run` and `create` pull when a model is missing)
    # go to a loopback port where nothing listens, never to the public registry.
    env["CORRAL_REGISTRY"] = f"127.0.0.1:{free_port()}"
    # Hugging Face's variables too: no user token, and hf.co names go to a dead loopback port.
    for hf in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        env.pop(hf, None)
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    if library:
        (root / "library").mkdir(exist_ok=True)
        env["CORRAL_LIBRARY"] = str(root / "library")
    return env
