"""Where names are pulled from and pushed to, and with what credentials: read once from Settings.

Every caller (the CLI's pull and push, the server's /api/pull and /api/push, the library's
background pulls) takes its `RegistryAccess` from the same settings, so CORRAL_REGISTRY,
HF_ENDPOINT, HF_TOKEN and the credentials file mean the same everywhere.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from corral.config.settings import Settings
from corral.registry.credentials import HUGGING_FACE_HOSTS, Credentials
from corral.registry.download import TransferOptions
from corral.registry.events import Progress
from corral.registry.pull import PullResult, pull
from corral.registry.push import PushResult, push
from corral.store.names import ModelName
from corral.store.store import Store


@dataclass(frozen=True)
class RegistryAccess:
    """The registry settings of one process: a mirror for Ollama's host, Hugging Face's endpoint and
    token, and the Corral home whose credentials.json (or Docker's config.json) holds the rest."""

    registry: str | None = None
    hf_endpoint: str | None = None
    hf_token: str | None = None
    home: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryAccess:
        """The access the settings describe; the Corral home is the folder that holds the store."""
        return cls(registry=settings.registry, hf_endpoint=settings.hf_endpoint, hf_token=settings.hf_token,
                   home=settings.models.parent)

    def credentials(self) -> Credentials:
        """Read now, not at start: a `docker login` or an edited credentials.json counts at once."""
        if self.home is None:
            return Credentials({}).with_token(HUGGING_FACE_HOSTS, self.hf_token)
        return Credentials.load(self.home, hf_token=self.hf_token)

    def pull(self, store: Store, name: str | ModelName, *, insecure: bool = False, progress: Progress | None = None,
             cancel: threading.Event | None = None, options: TransferOptions | None = None) -> PullResult:
        """`corral.registry.pull` with these settings."""
        return pull(store, name, insecure=insecure, registry=self.registry, credentials=self.credentials(),
                    progress=progress, cancel=cancel, options=options, hf_endpoint=self.hf_endpoint)

    def push(self, store: Store, name: str | ModelName, *, insecure: bool = False, progress: Progress | None = None,
             cancel: threading.Event | None = None, options: TransferOptions | None = None) -> PushResult:
        """`corral.registry.push` with these settings."""
        return push(store, name, insecure=insecure, registry=self.registry, credentials=self.credentials(),
                    progress=progress, cancel=cancel, options=options)
