"""Ollama's manifest: a Docker distribution v2 manifest whose layers are a model's parts.

    {"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
     "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:…","size":N},
     "layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:…","size":N,"from":"…"}]}

Field names are Ollama's JSON names; Python code may use the snake_case ones. `to_bytes` writes the
JSON the way Go's json.Encoder does (compact, `<>&` escaped, a final newline), so a manifest
written here has the same bytes, and so the same digest, as one written by Ollama.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from corral.store.errors import InvalidDigestError, InvalidManifestError
from corral.store.names import Digest, parse_digest


class MediaType(StrEnum):
    """The media types Ollama writes. Layers may carry others (tensor, json, draft...); they are kept as text."""

    MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    CONFIG = "application/vnd.docker.container.image.v1+json"
    MODEL = "application/vnd.ollama.image.model"
    ADAPTER = "application/vnd.ollama.image.adapter"
    PROJECTOR = "application/vnd.ollama.image.projector"
    TEMPLATE = "application/vnd.ollama.image.template"
    PROMPT = "application/vnd.ollama.image.prompt"  # the legacy name of TEMPLATE, still read
    SYSTEM = "application/vnd.ollama.image.system"
    PARAMS = "application/vnd.ollama.image.params"
    MESSAGES = "application/vnd.ollama.image.messages"
    LICENSE = "application/vnd.ollama.image.license"


def _to_digest(value: object) -> Digest:
    try:
        return parse_digest(value)  # type: ignore[arg-type]
    except InvalidDigestError as e:
        raise ValueError(e.message) from e  # pydantic reports ValueErrors with the field's location


DigestField = Annotated[
    Digest,
    PlainValidator(_to_digest),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}),
]

# Go's encoder escapes these inside strings (HTML safety); matching it keeps digests identical.
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class Layer(BaseModel):
    """One blob of a model: its media type, digest and size (plus where it came from, or its file name)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    media_type: str = Field(alias="mediaType")
    digest: DigestField
    size: int = Field(ge=0)
    from_: str | None = Field(default=None, alias="from")  # the parent model or source file
    name: str | None = None  # a tensor or config file's name, for safetensors-style models

    @field_validator("from_", "name", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        return value or None  # Go's `omitempty`: "" and absent are the same thing


class Manifest(BaseModel):
    """A model: its config blob and its layers, in order."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    schema_version: int = Field(default=2, alias="schemaVersion")
    media_type: str = Field(default=MediaType.MANIFEST.value, alias="mediaType")
    config: Layer
    layers: tuple[Layer, ...] = ()

    @field_validator("layers", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value  # Go writes a nil slice as null

    @property
    def size(self) -> int:
        """Config plus layers, in bytes: the size `/api/tags` reports."""
        return sum(layer.size for layer in self.all_layers())

    def all_layers(self) -> tuple[Layer, ...]:
        """The layers, then the config: every blob the manifest needs."""
        return (*self.layers, self.config)

    def layers_of(self, media_type: str) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.media_type == media_type)

    def to_bytes(self) -> bytes:
        """The manifest file's bytes, as Ollama's WriteManifest (json.Encoder.Encode) writes them."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return (text.translate(_GO_ESCAPES) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "?") -> Manifest:
        """Parse a manifest file; InvalidManifestError (naming `name`) if it is not one."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidManifestError(name, f"not JSON ({e})") from e
        if isinstance(raw, dict) and raw.get("mediaType") == "application/vnd.ollama.manifest.list.v2+json":
            raise InvalidManifestError(name, "manifest lists (one model for several runners) are not supported")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "manifest"
            raise InvalidManifestError(name, f"{where}: {first['msg']}") from e
