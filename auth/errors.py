"""The refusals of corral.auth: a missing or wrong key, a key without the right, a spent budget.

    CorralError                 (corral.errors)
     +-- AuthError
          +-- UnauthorizedError    no key, or one that matches none (HTTP 401)
          +-- PermissionDeniedError       a key without the scope, or a model outside its patterns (403)
          +-- RateLimitedError     over the key's requests or tokens per minute (429, Retry-After)
          +-- KeyFileError         the key file or CORRAL_API_KEYS cannot be read or written
"""

from __future__ import annotations

from corral.errors import CorralError


class AuthError(CorralError):
    """A request, or a key operation, that corral.auth refuses."""


class UnauthorizedError(AuthError):
    """No API key was sent, or the one sent matches no key."""


class PermissionDeniedError(AuthError):
    """The key is valid but may not do this."""


class RateLimitedError(AuthError):
    """The key spent its budget for this minute; `retry_after` is whole seconds until it may try again."""

    def __init__(self, message: str = "", retry_after: int = 1):
        self.retry_after = retry_after
        super().__init__(message, f"retry after {retry_after} s")

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after))


class KeyFileError(AuthError):
    """The key file (or CORRAL_API_KEYS) is unreadable, malformed, or a name is taken or unknown."""
