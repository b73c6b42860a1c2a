"""Errors of the model store (names, digests, blobs, manifests).

Exception tree:

    CorralError                        (corral.errors)
     +-- StoreError                    the model store cannot do what was asked
          +-- InvalidNameError         a model name is not [host/][namespace/]model[:tag]
          +-- InvalidDigestError       a digest is not sha256:<64 hex digits>
          +-- ModelNotFoundError       no manifest for that name
          +-- DigestMismatchError      the bytes written do not hash to the promised digest
          +-- BlobNotFoundError        a blob a caller (or a manifest) needs is not stored
          +-- InvalidManifestError     a manifest file is not valid JSON of the expected shape

Every StoreError carries `message` and `hint`; `str(error)` is the message alone, so the server can
send it as Ollama's `{"error": "..."}`, and `render()` adds the hint for the command line. Messages
follow Ollama's wording where Ollama has one (`model 'x' not found`, `digest mismatch, expected
"a", got "b"`, `blob "d" not found`). Which HTTP status each answers is the server's choice
(corral.server.errors.STATUS), not the store's.
Errors are rebuilt from their constructor arguments, so they pickle across the worker boundary.
"""

from __future__ import annotations

from corral.errors import CorralError

NAME_HINT = (
    "a model name is [host/][namespace/]model[:tag], e.g. 'llama3.2:latest'; each part starts with "
    "a letter, a digit or '_' and holds only letters, digits, '_', '-' and '.' "
    "(no '.' in a namespace, ':' only in a host for its port)"
)
DIGEST_HINT = "a digest is 'sha256:' (or 'sha256-') followed by 64 hexadecimal digits"


def quote(text: str) -> str:
    """`'text'`, or Python's escaped repr when the text holds characters a terminal would hide."""
    return f"'{text}'" if text.isprintable() else repr(text)


class StoreError(CorralError):
    """The model store cannot do what was asked."""


class InvalidNameError(StoreError):
    """A model name does not follow Ollama's grammar, or could name a path outside the store."""

    def __init__(self, name: str, reason: str, hint: str | None = NAME_HINT):
        self.name = name
        self.reason = reason
        super().__init__(f"invalid model name {quote(name)}: {reason}", hint)

    def __reduce__(self):
        return (type(self), (self.name, self.reason, self.hint))


class InvalidDigestError(StoreError):
    """A digest is not `sha256:<hex>` (Ollama: `invalid digest format`)."""

    def __init__(self, digest: str, hint: str | None = DIGEST_HINT):
        self.digest = digest
        super().__init__(f"invalid digest format: {quote(digest)}", hint)

    def __reduce__(self):
        return (type(self), (self.digest, self.hint))


class ModelNotFoundError(StoreError):
    """The store has no manifest for a name."""

    def __init__(self, name: str, hint: str | None = "'corral list' shows the models in the store"):
        self.name = name
        super().__init__(f"model {quote(name)} not found", hint)

    def __reduce__(self):
        return (type(self), (self.name, self.hint))


class DigestMismatchError(StoreError):
    """Bytes did not hash to the digest they were promised to have; nothing was stored."""

    def __init__(
        self,
        expected: str,
        got: str,
        hint: str | None = "the data was changed or cut short on its way; send it again",
    ):
        self.expected = expected
        self.got = got
        super().__init__(f'digest mismatch, expected "{expected}", got "{got}"', hint)

    def __reduce__(self):
        return (type(self), (self.expected, self.got, self.hint))


class BlobNotFoundError(StoreError):
    """A blob is not in the store."""

    def __init__(self, digest: str, hint: str | None = "upload the blob first (POST /api/blobs/<digest>)"):
        self.digest = digest
        super().__init__(f'blob "{digest}" not found', hint)

    def __reduce__(self):
        return (type(self), (self.digest, self.hint))


class InvalidManifestError(StoreError):
    """A manifest file cannot be read as a Docker v2 manifest, or does not match its blobs."""

    def __init__(
        self,
        name: str,
        reason: str,
        hint: str | None = "the manifest file may be damaged; remove the model and create or pull it again",
    ):
        self.name = name
        self.reason = reason
        super().__init__(f"invalid manifest for {quote(name)}: {reason}", hint)

    def __reduce__(self):
        return (type(self), (self.name, self.reason, self.hint))
