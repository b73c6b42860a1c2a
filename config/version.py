"""Which versions Corral reports: its own, and the level of Ollama's API it speaks.

Clients written for Ollama gate features on `/api/version` (Open WebUI, the `ollama` CLI and
libraries compare it with the release that added a field), so the server answers the Ollama
release whose request and response fields Corral implements, not Corral's own number; Corral's
own is an extra field (`corral_version`) and in `corral --version`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# Ollama 0.33's api/types.go is what the native API was compared with field by field: think and
# thinking, logprobs, capabilities and model_info in show and tags, suffix, images, truncate and
# shift, per-request load options (README: "Ollama API level" lists what is still missing).
OLLAMA_API_VERSION = "0.33.0"


def corral_version() -> str:
    """The installed Corral's version ("0.0.0" when run from a tree that was never installed)."""
    try:
        return version("corral")
    except PackageNotFoundError:
        return "0.0.0"


def version_line() -> str:
    """What `corral --version` prints."""
    return f"corral {corral_version()} (Ollama API {OLLAMA_API_VERSION})"
