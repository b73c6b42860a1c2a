"""Model names and blob digests, spelled and checked exactly as Ollama does (types/model/name.go).

A name is `[scheme://][host/][namespace/]model[:tag]`. `parse_bare` splits text into parts without
judging them; `parse` fills the missing parts with the defaults (registry.ollama.ai, library,
latest, https) and raises InvalidNameError unless every part is valid. The part rules keep a valid
name inside the store's manifest folder: no part can be empty, start with '.', or hold '/', '\\',
NUL or any other character outside [A-Za-z0-9_.-] (plus ':' in a host), so `..`, absolute paths and
separators never reach the file system.

A digest is `sha256:<64 hex>` in JSON and in the API, and `sha256-<64 hex>` as a blob's file name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Literal

from corral.store.errors import InvalidDigestError, InvalidNameError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

# Ollama marks a part that a separator promised but the text left empty (`mm:`, `/nn/mm`) with
# this sentinel; it can never be valid, since '!' is not allowed in any part.
MISSING_PART = "!MISSING!"

PartKind = Literal["host", "namespace", "model", "tag"]
MAX_LENGTH: dict[PartKind, int] = {"host": 350, "namespace": 80, "model": 80, "tag": 80}

# ASCII only: str.isalnum() would let through letters of every script, which Ollama (bytewise) rejects.
_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_LATER = _FIRST | {"-"}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")  # RFC 3986; Ollama does not check it at all


def part_problem(kind: PartKind, value: str) -> str | None:
    """Why `value` is not a valid part of this kind, or None when it is (Ollama's isValidPart)."""
    if value in ("", MISSING_PART):
        return f"the {kind} is empty"
    length = len(value.encode("utf-8", "surrogatepass"))  # Ollama counts bytes
    if length > MAX_LENGTH[kind]:
        return f"the {kind} is {length} characters long; the limit is {MAX_LENGTH[kind]}"
    if value[0] not in _FIRST:
        return f"the {kind} {_q(value)} must start with a letter, a digit or '_', not {_q(value[0])}"
    for ch in value[1:]:
        if ch in _LATER:
            continue
        if ch == ".":
            if kind == "namespace":
                return f"the namespace {_q(value)} may not contain '.'"
            continue
        if ch == ":":
            if kind != "host":
                return f"the {kind} {_q(value)} may not contain ':' (only a host may, for its port)"
            continue
        return f"the {kind} {_q(value)} may not contain {_q(ch)}"
    return None


def _q(text: str) -> str:
    return f"'{text}'" if text.isprintable() else repr(text)


@dataclass(frozen=True, eq=False)
class ModelName:
    """The parts of a model name, in the case they were written.

    Equality and hashing ignore case on every part (Ollama's EqualFold) and ignore the scheme, which
    says how to reach a registry, not which model is meant.
    """

    host: str = ""
    namespace: str = ""
    model: str = ""
    tag: str = ""
    scheme: str = ""

    def __str__(self) -> str:
        """Ollama's Name.String(): the parts present, as `host/namespace/model:tag` (no scheme)."""
        text = "".join(f"{part}/" for part in (self.host, self.namespace) if part) + self.model
        return f"{text}:{self.tag}" if self.tag else text

    def key(self) -> tuple[str, str, str, str]:
        """The parts folded to lower case: what equality, hashing and store lookups compare."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelName):
            return NotImplemented
        return self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def merge(self, defaults: ModelName) -> ModelName:
        """Fill each empty part from `defaults` (Ollama's Merge; the model part is never filled)."""
        return replace(
            self,
            host=self.host or defaults.host,
            namespace=self.namespace or defaults.namespace,
            tag=self.tag or defaults.tag,
            scheme=self.scheme or defaults.scheme,
        )

    def problem(self) -> str | None:
        """Why this name is not fully qualified and valid, or None (parts checked left to right)."""
        if self.scheme and not _SCHEME.fullmatch(self.scheme):
            return f"the scheme {_q(self.scheme)} is not a URL scheme such as 'https'"
        parts: tuple[tuple[PartKind, str], ...] = (
            ("host", self.host),
            ("namespace", self.namespace),
            ("model", self.model),
            ("tag", self.tag),
        )
        for kind, value in parts:
            if (why := part_problem(kind, value)) is not None:
                return why
        return None

    def is_valid(self) -> bool:
        """Ollama's IsValid (== IsFullyQualified): all four parts present and valid."""
        return self.problem() is None

    def display_shortest(self) -> str:
        """The short form `/api/tags` shows: the default host (and library namespace) dropped, the tag kept.

        `registry.ollama.ai/library/llama3:latest` -> `llama3:latest`; `registry.ollama.ai/me/m:t`
        -> `me/m:t`; any other host keeps both host and namespace.
        """
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def filepath_parts(self) -> tuple[str, str, str, str]:
        """`(host, namespace, model, tag)`: the manifest's path below `manifests/`.

        Checked again here, not trusted from construction, because a ModelName can be built
        directly and these parts become directory names.
        """
        why = self.problem()
        if why is not None:
            raise InvalidNameError(str(self), why)
        return (self.host, self.namespace, self.model, self.tag)


DEFAULT_NAME = ModelName(host=DEFAULT_HOST, namespace=DEFAULT_NAMESPACE, tag=DEFAULT_TAG, scheme=DEFAULT_SCHEME)


def _cut_promised(text: str, sep: str) -> tuple[str, str, bool]:
    """Cut at the last `sep`; an empty side becomes MISSING_PART (Ollama's cutPromised)."""
    i = text.rfind(sep)
    if i < 0:
        return text, "", False
    return text[:i] or MISSING_PART, text[i + len(sep) :] or MISSING_PART, True


def parse_bare(text: str) -> ModelName:
    """Split `text` into parts without defaults or checks (Ollama's ParseNameBare). Never raises."""
    tag = ""
    # '/' cannot occur in a tag, so a ':' after the last '/' starts the tag; one before it is a port.
    if text.rfind(":") > text.rfind("/"):
        text, tag, _ = _cut_promised(text, ":")
    text, model, promised = _cut_promised(text, "/")
    if not promised:
        return ModelName(model=text, tag=tag)
    text, namespace, promised = _cut_promised(text, "/")
    if not promised:
        return ModelName(namespace=text, model=model, tag=tag)
    scheme, sep, host = text.partition("://")
    if not sep:
        scheme, host = "", scheme
    return ModelName(host=host, namespace=namespace, model=model, tag=tag, scheme=scheme)


def parse(text: str) -> ModelName:
    """Parse a name, fill in the defaults, and check it (Ollama's ParseName + IsValid).

    `llama3` -> registry.ollama.ai/library/llama3:latest. Raises InvalidNameError, and nothing else,
    when the result is not fully qualified and valid.
    """
    if text == "":
        raise InvalidNameError(text, "the name is empty")
    name = parse_bare(text).merge(DEFAULT_NAME)
    why = name.problem()
    if why is not None:
        raise InvalidNameError(text, why)
    return name


def is_valid_name(text: str) -> bool:
    """Whether `parse(text)` succeeds."""
    return parse_bare(text).merge(DEFAULT_NAME).is_valid()


# ---------------------------------------------------------------------------------------------
# Digests

_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")  # used with fullmatch: '$' would allow a '\n'
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Digest:
    """A SHA-256 content address. `str()` is `sha256:<hex>`; `file_name` is `sha256-<hex>`."""

    hex: str

    def __post_init__(self) -> None:
        # A Digest names a file under blobs/, so even direct construction must hold 64 hex digits.
        if not isinstance(self.hex, str) or not _HEX64.fullmatch(self.hex):
            raise InvalidDigestError(str(self.hex))

    def __str__(self) -> str:
        return f"sha256:{self.hex}"

    @property
    def file_name(self) -> str:
        return f"sha256-{self.hex}"

    @property
    def short(self) -> str:
        """The first 12 hex digits, as `ollama list` shows IDs and `pulling <digest>` names layers."""
        return self.hex[:12]

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Accept `sha256:<hex>` or `sha256-<hex>` (either case); raise InvalidDigestError otherwise."""
        match = _DIGEST.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidDigestError(str(text))
        return cls(match.group(1).lower())

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())


def parse_digest(text: str | Digest) -> Digest:
    """A Digest from its text form (or the Digest itself)."""
    return text if isinstance(text, Digest) else Digest.parse(text)


def is_blob_file_name(name: str) -> bool:
    """Whether a file name in blobs/ is a finished blob (`sha256-<hex>`), not a temp or partial file."""
    return name.startswith("sha256-") and _DIGEST.fullmatch(name) is not None
