"""A registry's manifest, judged before anything it names touches the store.

A registry is not trusted. Its manifest is read with a size bound (also when it streams without a
Content-Length, and when it never ends), then checked field by field: the schema, the number of
layers, each size (non-negative, bounded), each digest (`sha256:<64 hex>`, parsed by corral.store's
Digest before it can become a file name: a climb out of the folder, 63 or 65 digits and other algorithms
are refused), and each media type (one of the kinds Ollama writes; anything else is refused with
its name). Only then is it a Manifest that the pull may act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from pydantic import ValidationError

from corral.store.errors import InvalidDigestError
from corral.store.manifest import Manifest, MediaType
from corral.store.names import parse_digest
from corral.registry.errors import ManifestRejectedError

MANIFEST_LIST = "application/vnd.ollama.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

LAYER_TYPES: frozenset[str] = frozenset({
    MediaType.MODEL, MediaType.ADAPTER, MediaType.PROJECTOR, MediaType.TEMPLATE, MediaType.PROMPT,
    MediaType.SYSTEM, MediaType.PARAMS, MediaType.MESSAGES, MediaType.LICENSE,
})
CONFIG_TYPES: frozenset[str] = frozenset({MediaType.CONFIG})


@dataclass(frozen=True, slots=True)
class Limits:
    """What a manifest from a registry may claim."""

    max_manifest_bytes: int = 4 << 20  # Ollama's manifests are about 1 KB
    max_layers: int = 1000
    max_blob_size: int = 1 << 40  # 1 TiB: more than any model, less than a disk-filling lie


def read_bounded(chunks: Iterable[bytes], limit: int, name: str, length: str | None = None) -> bytes:
    """The bytes of a body that may not exceed `limit`; ManifestRejectedError as soon as it does.

    `length` is the Content-Length header, refused before reading when it is already too large.
    """
    if length is not None:
        try:
            announced = int(length)
        except ValueError:
            raise ManifestRejectedError(name, f"the Content-Length {length!r} is not a number") from None
        if announced > limit:
            raise ManifestRejectedError(name, f"the manifest is {announced} bytes; the limit is {limit}")
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ManifestRejectedError(name, f"the manifest is larger than the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def check_manifest(data: bytes, name: str, limits: Limits = Limits()) -> Manifest:
    """The Manifest in `data`, or ManifestRejectedError saying what is wrong with it."""
    if len(data) > limits.max_manifest_bytes:
        raise ManifestRejectedError(name, f"the manifest is {len(data)} bytes; the limit is {limits.max_manifest_bytes}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ManifestRejectedError(name, f"the manifest is not JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ManifestRejectedError(name, "the manifest is not a JSON object")
    media_type = raw.get("mediaType")
    if media_type in (MANIFEST_LIST, OCI_INDEX, DOCKER_LIST):
        raise ManifestRejectedError(name, f"manifest lists ({media_type}) are not supported")
    if media_type not in (None, MediaType.MANIFEST):
        raise ManifestRejectedError(name, f"the manifest's media type {media_type!r} is not {MediaType.MANIFEST}")
    if raw.get("schemaVersion") != 2:
        raise ManifestRejectedError(name, f"schemaVersion is {raw.get('schemaVersion')!r}, not 2")
    layers = raw.get("layers")
    if layers is None:
        layers = []
    if not isinstance(layers, list):
        raise ManifestRejectedError(name, "'layers' is not a list")
    if len(layers) > limits.max_layers:
        raise ManifestRejectedError(name, f"the manifest has {len(layers)} layers; the limit is {limits.max_layers}")
    _check_descriptor(raw.get("config"), "config", CONFIG_TYPES, name, limits)
    for index, layer in enumerate(layers):
        _check_descriptor(layer, f"layer {index}", LAYER_TYPES, name, limits)
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise ManifestRejectedError(name, f"{where}: {first['msg']}") from None


def _check_descriptor(entry: Any, where: str, allowed: frozenset[str], name: str, limits: Limits) -> None:
    if not isinstance(entry, dict):
        raise ManifestRejectedError(name, f"{where} is not an object")
    digest = entry.get("digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise ManifestRejectedError(name, f"{where} has the digest {_show(digest)}, not sha256:<64 hex digits>")
    try:
        parse_digest(digest)  # Digest re-checks its 64 hex digits, so nothing else becomes a path
    except InvalidDigestError:
        raise ManifestRejectedError(name, f"{where} has the digest {_show(digest)}, not sha256:<64 hex digits>") from None
    size = entry.get("size")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ManifestRejectedError(name, f"{where} has the size {_show(size)}, not a whole number")
    if size < 0 or size > limits.max_blob_size:
        raise ManifestRejectedError(name, f"{where} has the size {size}; sizes run from 0 to {limits.max_blob_size}")
    media_type = entry.get("mediaType")
    if media_type not in allowed:
        known = ", ".join(sorted(allowed))
        raise ManifestRejectedError(name, f"{where} has the unknown media type {_show(media_type)} (known: {known})")


def _show(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
