"""Progress of a pull or a push, as the plain events Ollama's `/api/pull` and `/api/push` stream.

    pull: pulling manifest -> pulling <12 hex> (digest, total, completed)... -> verifying sha256 digest
          -> writing manifest -> success
    push: retrieving manifest -> pushing <12 hex> (digest, total, completed)... -> pushing manifest
          -> success

`ProgressEvent.to_json()` is one NDJSON line's object, with Ollama's field names and the absent
fields left out. A transfer calls its `progress` callback on the caller's thread only, at most
every `interval` seconds per layer while bytes move, and once more when a layer is complete (so a
layer's last event has completed == total).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from corral.store.names import Digest

PULLING_MANIFEST = "pulling manifest"
VERIFYING = "verifying sha256 digest"
WRITING_MANIFEST = "writing manifest"
SUCCESS = "success"
RETRIEVING_MANIFEST = "retrieving manifest"
PUSHING_MANIFEST = "pushing manifest"


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of a transfer: a status, and for a layer its digest and byte counts."""

    status: str
    digest: str | None = None  # "sha256:<hex>"
    total: int | None = None  # the layer's size in bytes
    completed: int | None = None  # bytes of it done (already stored counts as done)

    def to_json(self) -> dict[str, str | int]:
        """Ollama's ProgressResponse object: `status`, then `digest`, `total`, `completed` when set."""
        out: dict[str, str | int] = {"status": self.status}
        if self.digest is not None:
            out["digest"] = self.digest
        if self.total is not None:
            out["total"] = self.total
        if self.completed is not None:
            out["completed"] = self.completed
        return out

    @property
    def is_layer(self) -> bool:
        return self.digest is not None


def layer_event(verb: str, digest: Digest, total: int, completed: int) -> ProgressEvent:
    """`pulling <12 hex>` / `pushing <12 hex>` with the full digest and the counts."""
    return ProgressEvent(f"{verb} {digest.short}", str(digest), total, completed)


Progress = Callable[[ProgressEvent], None]
"""Receives each ProgressEvent; raising from it (KeyboardInterrupt included) stops the transfer."""


def ignore(_event: ProgressEvent) -> None:
    """The default progress callback."""
