"""A stored model's layers <-> a model definition.

A manifest is read back as a ModelDefinition whose FROM and ADAPTER name the blob files, so
`show --modelfile` prints a Modelfile that re-creates the same model (same layers, same digest),
and so stored models compile through the same compiler as definition files.

A split GGUF is stored as one model layer per shard, in shard order (as Ollama imports shards);
FROM names the first shard's blob, and the compiler asks the store (`StoreResolver.split_shards`)
for the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from corral.compiler.resolve import ParentModel, weights_ref
from corral.compiler.spec import THINKING_PARSERS, ChatMessage, RuntimeSpec
from corral.dsl import parameters as P
from corral.dsl.ir import Message, ModelDefinition, Parameter, Text
from corral.store.errors import InvalidManifestError
from corral.store.manifest import Layer, Manifest, MediaType
from corral.store.store import Store


@dataclass(frozen=True)
class StoredParts:
    """The texts and files a manifest's layers hold."""

    models: tuple[Layer, ...]  # one GGUF, or the shards of a split one in order
    adapters: tuple[Layer, ...]
    template: str | None
    system: str | None
    parameters: dict[str, Any]
    messages: list[dict[str, str]]
    licenses: tuple[str, ...]
    parser: str | None = None  # the config's PARSER, when it names a format Corral parses
    projector: Layer | None = None  # a multimodal projector (mmproj): the model sees images

    @property
    def model(self) -> Layer:
        """The weights file FROM names: the GGUF, or a split GGUF's first shard."""
        return self.models[0]


def read_parts(store: Store, manifest: Manifest, name: str) -> StoredParts:
    """Read a manifest's text layers (template, system, params, messages, licenses)."""
    models = manifest.layers_of(MediaType.MODEL)
    if not models:
        raise InvalidManifestError(name, "it has no model layer")

    def text(layer: Layer) -> str:
        return store.blob_path(layer.digest, must_exist=True).read_text(encoding="utf-8")

    def last(*kinds: MediaType) -> str | None:
        found = [layer for kind in kinds for layer in manifest.layers_of(kind)]
        return text(found[-1]) if found else None

    params_text = last(MediaType.PARAMS)
    messages_text = last(MediaType.MESSAGES)
    try:
        params = json.loads(params_text) if params_text else {}
        messages = json.loads(messages_text) if messages_text else []
    except json.JSONDecodeError as e:
        raise InvalidManifestError(name, f"a params or messages layer is not JSON ({e})") from None
    return StoredParts(
        models=models, adapters=tuple(manifest.layers_of(MediaType.ADAPTER)),
        template=last(MediaType.TEMPLATE, MediaType.PROMPT), system=last(MediaType.SYSTEM),
        parameters=params if isinstance(params, dict) else {},
        messages=[m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [],
        licenses=tuple(text(layer) for layer in manifest.layers_of(MediaType.LICENSE)),
        parser=_config_parser(store, manifest),
        projector=(manifest.layers_of(MediaType.PROJECTOR) or [None])[-1],
    )


def _config_parser(store: Store, manifest: Manifest) -> str | None:
    """The config blob's `parser` (Ollama's field too); a name Corral does not parse is left out,
    so a pulled model whose parser is another kind (tool calls, a renderer's) still runs."""
    path = store.blob_path(manifest.config.digest)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    parser = config.get("parser") if isinstance(config, dict) else None
    return parser if parser in THINKING_PARSERS else None


def definition_of(store: Store, parts: StoredParts) -> ModelDefinition:
    """The definition a stored model amounts to, with FROM/ADAPTER naming its blob files."""
    params = []
    for key, raw in parts.parameters.items():
        spec = P.PARAMETERS.get(key)
        if spec is None:  # Ollama folders may carry parameters Corral does not know; skip them
            continue
        try:
            params.append(Parameter(name=key, value=P.coerce(spec, raw)))
        except P.ParamValueError:
            continue
    return ModelDefinition(
        from_=Text(value=str(store.blob_path(parts.model.digest))),
        adapters=tuple(Text(value=str(store.blob_path(a.digest))) for a in parts.adapters),
        projector=Text(value=str(store.blob_path(parts.projector.digest))) if parts.projector else None,
        parameters=tuple(params),
        template=Text(value=parts.template) if parts.template is not None else None,
        system=Text(value=parts.system) if parts.system else None,
        messages=tuple(Message(role=m["role"], content=m.get("content", ""))  # type: ignore[arg-type]
                       for m in parts.messages if m.get("role") in ("system", "user", "assistant", "tool")),
        licenses=tuple(Text(value=x) for x in parts.licenses),
        parser=Text(value=parts.parser) if parts.parser else None,
    )


def base_model(store: Store, parts: StoredParts, name: str) -> ParentModel:
    """What a definition saying `FROM <name>` inherits."""
    d = definition_of(store, parts)
    return ParentModel(
        name=name,
        weights=weights_ref(store.blob_path(parts.model.digest), str(parts.model.digest)),
        splits=tuple(weights_ref(store.blob_path(m.digest), str(m.digest)) for m in parts.models[1:]),
        adapters=tuple(weights_ref(store.blob_path(a.digest), str(a.digest)) for a in parts.adapters),
        projector=(weights_ref(store.blob_path(parts.projector.digest), str(parts.projector.digest))
                   if parts.projector else None),
        template=parts.template, system=parts.system, parameters=d.parameter_dict(),
        messages=tuple(ChatMessage(role=m.role, content=m.content) for m in d.messages),
        licenses=parts.licenses,
    )


def config_json(spec: RuntimeSpec) -> bytes:
    """The config blob (Ollama's ConfigV2 fields); nothing time-dependent, so digests are stable."""
    m = spec.model
    config = {
        "model_format": "gguf",
        "model_family": m.architecture,
        "model_families": [m.architecture],
        "model_type": m.parameter_size,
        "file_type": m.quantization,
        "architecture": "amd64",
        "os": "linux",
        "context_length": m.context_length,
        "embedding_length": m.embedding_length,
        "requires": spec.requires,
        "parser": spec.parser,
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return json.dumps({k: v for k, v in config.items() if v is not None}, separators=(",", ":")).encode()
