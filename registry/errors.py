"""Errors of talking to a model registry (pull, push, credentials).

Exception tree:

    CorralError                          (corral.errors)
     +-- StoreError                      (corral.store.errors)
     |    +-- DigestMismatchError        a downloaded blob's bytes are not the ones its digest names (400)
     +-- RegistryError                   a registry could not give or take what was asked        (500)
          +-- InsecureRegistryError      plain http (a name, a redirect, a token realm) without insecure (400)
          +-- RegistryUnreachableError   no connection, or it timed out                          (502)
          +-- RegistryAuthError          the registry refused us (401/403), or its challenge is unusable (401)
          +-- RegistryResponseError      the registry answered with an unexpected status         (502)
          |    +-- ManifestNotFoundError the registry has no such model (404)
          +-- ManifestRejectedError      the manifest breaks a bound, names a bad digest or an unknown media type (502)
          +-- BlobTransferError          a blob could not be downloaded or uploaded, retries spent (502)
          +-- InsufficientSpaceError     the store's disk has too little room for what is missing (507)
          +-- TransferCancelledError     the caller asked the transfer to stop                   (499)
          +-- CredentialsError           a credentials file cannot be read                       (500)

Wrong bytes are a corral.store DigestMismatchError, the same error an upload with a bad digest
gets. Every error carries `message` and `hint` (CorralError); `str(error)` is the message alone, as
the server sends it in Ollama's `{"error": "..."}`. Messages follow Ollama's wording where it has
one: a missing model is `pull model manifest: file does not exist`, plain http without consent is
`insecure protocol http`. The statuses in the tree are suggestions for the server's table
(corral.server.errors.STATUS), which alone decides them. Errors are rebuilt from their constructor
arguments, so they pickle.
"""

from __future__ import annotations

from corral.errors import CorralError

INSECURE_HINT = "pass --insecure (\"insecure\": true in the API) to allow plain http to this registry"


class RegistryError(CorralError):
    """A registry could not give or take what was asked."""



class InsecureRegistryError(RegistryError):
    """Plain http was about to be used without the caller's consent."""


    def __init__(self, url: str, hint: str | None = INSECURE_HINT):
        self.url = url
        super().__init__(f"insecure protocol http ({url})", hint)

    def __reduce__(self):
        return (type(self), (self.url, self.hint))


class RegistryUnreachableError(RegistryError):
    """The registry (or the storage host it redirected to) did not answer."""


    def __init__(self, host: str, reason: str, hint: str | None = "check the name's host and your network"):
        self.host = host
        self.reason = reason
        super().__init__(f"cannot reach registry {host}: {reason}", hint)

    def __reduce__(self):
        return (type(self), (self.host, self.reason, self.hint))


class RegistryAuthError(RegistryError):
    """The registry refused the request, or asked for authentication we cannot give."""


    def __init__(self, host: str, reason: str,
                 hint: str | None = "put credentials for this host in ~/.corral/credentials.json "
                                    "or log in with docker (~/.docker/config.json)"):
        self.host = host
        self.reason = reason
        super().__init__(f"registry {host}: {reason}", hint)

    def __reduce__(self):
        return (type(self), (self.host, self.reason, self.hint))


class RegistryResponseError(RegistryError):
    """The registry answered with a status the protocol does not expect here."""


    def __init__(self, what: str, status: int, detail: str = "", hint: str | None = None):
        self.what = what
        self.status = status
        self.detail = detail
        text = f"{what}: {status}" + (f": {detail}" if detail else "")
        super().__init__(text, hint)

    def __reduce__(self):
        return (type(self), (self.what, self.status, self.detail, self.hint))


class ManifestNotFoundError(RegistryResponseError):
    """The registry has no manifest for this name (Ollama: `pull model manifest: file does not exist`)."""


    def __init__(self, name: str, hint: str | None = None):
        self.name = name
        self.what, self.status, self.detail = "pull model manifest", 404, "file does not exist"
        CorralError.__init__(self, "pull model manifest: file does not exist",
                             hint or f"the registry has no model '{name}'; check its spelling and tag")

    def __reduce__(self):
        return (type(self), (self.name, self.hint))


class ManifestRejectedError(RegistryError):
    """A manifest from a registry was refused before anything was written."""


    def __init__(self, name: str, reason: str,
                 hint: str | None = "the registry sent a manifest Corral will not store; nothing was written"):
        self.name = name
        self.reason = reason
        super().__init__(f"pull model manifest for '{name}': {reason}", hint)

    def __reduce__(self):
        return (type(self), (self.name, self.reason, self.hint))


class BlobTransferError(RegistryError):
    """A blob could not be moved, after the retries it was allowed."""


    def __init__(self, digest: str, reason: str,
                 hint: str | None = "run the same command again: what was downloaded is kept and resumed"):
        self.digest = digest
        self.reason = reason
        super().__init__(f"blob {digest}: {reason}", hint)

    def __reduce__(self):
        return (type(self), (self.digest, self.reason, self.hint))


class InsufficientSpaceError(RegistryError):
    """The store's file system has less room than the blobs still missing need."""


    def __init__(self, needed: int, free: int, where: str, hint: str | None = "free some disk space, "
                 "or point CORRAL_MODELS at a larger disk"):
        self.needed = needed
        self.free = free
        self.where = where
        super().__init__(f"not enough disk space in {where}: the download needs {needed} bytes, "
                         f"{free} are free", hint)

    def __reduce__(self):
        return (type(self), (self.needed, self.free, self.where, self.hint))


class TransferCancelledError(RegistryError):
    """The caller's cancel event was set; partial downloads are kept for the next try."""


    def __init__(self, what: str = "transfer", hint: str | None = None):
        self.what = what
        super().__init__(f"{what} cancelled", hint)

    def __reduce__(self):
        return (type(self), (self.what, self.hint))


class CredentialsError(RegistryError):
    """A credentials file exists but cannot be read as one."""


    def __init__(self, path: str, reason: str, hint: str | None = None):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read credentials from {path}: {reason}",
                         hint or 'the file holds {"HOST": {"username": "...", "password": "..."}} '
                                 'or {"HOST": {"token": "..."}}')

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.hint))
