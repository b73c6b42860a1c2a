"""Scopes, what each route needs, and which models a key may use.

Two scopes: `inference` (run and read models: generate, chat, embeddings, listing, show, ps, and
all of /v1) and `admin` (everything, including what changes the store or the library: create,
delete, copy, pull, push, blobs, library, apply, and /metrics when asked from another machine).
An admin key may do whatever an inference key may. `/` and `/api/version` are always open; a
route under /api or /v1 that the table does not name needs admin, so a new route is closed until
it is placed here.
"""

from __future__ import annotations

import fnmatch
from enum import Enum


class Scope(str, Enum):
    INFERENCE = "inference"
    ADMIN = "admin"


class Need(Enum):
    """What a route asks of the caller."""

    OPEN = "open"  # anyone, key or not
    INFERENCE = "inference"
    ADMIN = "admin"
    LOCAL_OR_ADMIN = "local-or-admin"  # open from a loopback address, admin from anywhere else


_OPEN = {"/", "/api/version"}
_INFERENCE = {"/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/tags", "/api/show", "/api/ps"}
_ADMIN = {"/api/create", "/api/copy", "/api/delete", "/api/pull", "/api/push", "/api/library",
          "/api/library/apply"}
_LOCAL_OR_ADMIN = {"/metrics"}

MODEL_FIELDS = ("model", "name", "source", "destination")
"""The fields of a JSON body that name a model; every one a request names must match the key's patterns."""


def need_of(path: str) -> Need:
    """What the route at `path` needs (see the module docstring)."""
    path = path.rstrip("/") or "/"
    if path in _OPEN:
        return Need.OPEN
    if path in _LOCAL_OR_ADMIN:
        return Need.LOCAL_OR_ADMIN
    if path in _INFERENCE or path == "/v1" or path.startswith("/v1/"):
        return Need.INFERENCE
    if path in _ADMIN or path.startswith("/api/blobs/"):
        return Need.ADMIN
    if path.startswith("/api/"):
        return Need.ADMIN  # unnamed: closed until the table names it
    return Need.OPEN  # outside both APIs there is nothing but `/`


def allows(scope: Scope, need: Need) -> bool:
    """Whether a key of `scope` may call a route that needs `need` (LOCAL_OR_ADMIN off loopback: admin)."""
    if need in (Need.OPEN, Need.INFERENCE):
        return True
    return scope is Scope.ADMIN


_DEFAULT_PREFIX = "registry.ollama.ai/library/"


def model_candidates(name: str) -> set[str]:
    """The spellings of one model name a pattern may match: as written, with and without Ollama's
    default host, namespace and `:latest` tag."""
    short = name[len(_DEFAULT_PREFIX):] if name.startswith(_DEFAULT_PREFIX) else name
    short = short[len("library/"):] if short.startswith("library/") else short
    names = {name, short}
    last = short.rsplit("/", 1)[-1]
    if ":" not in last:
        names.add(short + ":latest")
    elif short.endswith(":latest"):
        names.add(short[:-len(":latest")])
    return names


def model_allowed(patterns: tuple[str, ...], name: str) -> bool:
    """Whether `name` matches one of `patterns` (`*` and `?` wildcards, case-sensitive); no patterns: any model."""
    if not patterns:
        return True
    names = model_candidates(name)
    return any(fnmatch.fnmatchcase(candidate, pattern) for pattern in patterns for candidate in names)
