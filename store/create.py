"""`corral create`: compile a definition, then store its weights and texts as an Ollama model.

Compilation comes first (GGUF check, template test-render, memory plan), so a definition that
cannot run leaves the store untouched; blobs are content-addressed and the manifest is written
last, atomically, so a model appears whole or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from corral.compiler.compile import CompileOptions, compile_definition
from corral.compiler.errors import GGUFError
from corral.compiler.gguf.check import check_gguf
from corral.compiler.resolve import ParentModel, weights_ref
from corral.compiler.spec import RuntimeSpec, WeightsRef
from corral.dsl.build import Builder
from corral.dsl.ir import ModelDefinition
from corral.dsl.span import Span
from corral.store import names
from corral.store.errors import ModelNotFoundError, StoreError
from corral.store.layers import base_model, config_json, read_parts
from corral.store.manifest import Layer, Manifest, MediaType
from corral.store.names import Digest
from corral.store.store import Progress, Store


Fetch = Callable[[str], None]
"""Brings a model that is not in the store into it (the CLI and the server pass a registry pull)."""


class StoreResolver:
    """The compiler's view of the store: `FROM <model>` and `FROM sha256:<hex>`.

    With `fetch`, a FROM model the store lacks is fetched first (then read as if it had been there);
    its errors (a registry's 404, a refused manifest) are the create's.
    """

    def __init__(self, store: Store, fetch: Fetch | None = None):
        self.store = store
        self.fetch = fetch

    def model(self, name: str) -> ParentModel | None:
        try:
            manifest = self.store.read_manifest(name)
        except names.InvalidNameError:
            return None
        except ModelNotFoundError:
            if self.fetch is None:
                return None
            self.fetch(name)
            manifest = self.store.read_manifest(name)
        return base_model(self.store, read_parts(self.store, manifest, name), name)

    def blob(self, digest: str) -> Path | None:
        return self.store.blob_path(digest) if self.store.has_blob(digest) else None

    def split_shards(self, first: Path) -> tuple[WeightsRef, ...] | None:
        """The further shards of the split model whose first shard is the blob `first`: the model
        layers after it in a manifest that has it first (None when `first` is no such blob)."""
        if first.parent.resolve() != self.store.blobs_dir.resolve() or not names.is_blob_file_name(first.name):
            return None
        for entry in self.store.list_models():
            models = entry.manifest.layers_of(MediaType.MODEL)
            if len(models) > 1 and self.store.blob_path(models[0].digest).name == first.name:
                return tuple(weights_ref(self.store.blob_path(m.digest), str(m.digest)) for m in models[1:])
        return None


@dataclass(frozen=True)
class Created:
    name: str  # display form, e.g. "smol:latest"
    digest: str  # manifest sha256 hex
    spec: RuntimeSpec


Status = Callable[[str], None]


def create_model(store: Store, name: str, definition: ModelDefinition, *, base_dir: Path,
                 options: CompileOptions, source: str | None = None,
                 progress: Progress | None = None, status: Status | None = None,
                 fetch: Fetch | None = None) -> Created:
    """Create (or replace) model `name` from a parsed definition; `fetch` brings a missing FROM model."""
    say = status or (lambda _msg: None)
    model_name = names.parse(name)
    spec = compile_definition(definition, name=model_name.display_shortest(), base_dir=base_dir,
                              resolver=StoreResolver(store, fetch), options=options, source=source)
    layers: list[Layer] = []

    def blob_file(path: str, known: str | None, media: MediaType) -> None:
        if known and store.has_blob(known):
            digest = names.parse_digest(known)
            say(f"using existing layer {digest}")
        else:
            digest = store.put_blob_file(Path(path), progress)
            say(f"using layer {digest}")
        layers.append(Layer(media_type=media, digest=digest, size=store.blob_path(digest).stat().st_size))

    def blob_text(data: bytes, media: MediaType) -> None:
        digest = store.put_blob_bytes(data)
        layers.append(Layer(media_type=media, digest=digest, size=len(data)))

    say("parsing GGUF")
    for weights in spec.weight_files:  # a split GGUF: one model layer per shard, in order
        blob_file(weights.path, weights.digest, MediaType.MODEL)
    for adapter in spec.adapters:
        blob_file(adapter.path, adapter.digest, MediaType.ADAPTER)
    if spec.projector is not None:
        blob_file(spec.projector.path, spec.projector.digest, MediaType.PROJECTOR)
    if spec.template.origin in ("definition", "base"):
        blob_text(spec.template.source.encode(), MediaType.TEMPLATE)
    if spec.system:
        blob_text(spec.system.encode(), MediaType.SYSTEM)
    params = _stored_parameters(spec)
    if params:
        blob_text(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode(), MediaType.PARAMS)
    if spec.messages:
        blob_text(json.dumps([m.model_dump() for m in spec.messages], separators=(",", ":"),
                             ensure_ascii=False).encode(), MediaType.MESSAGES)
    for text in spec.licenses:
        blob_text(text.encode(), MediaType.LICENSE)
    config = config_json(spec)
    config_digest = store.put_blob_bytes(config)
    manifest = Manifest(config=Layer(media_type=MediaType.CONFIG, digest=config_digest, size=len(config)),
                        layers=tuple(layers))
    say("writing manifest")
    digest = store.write_manifest(model_name, manifest)
    say("success")
    return Created(model_name.display_shortest(), digest, spec)


def _stored_parameters(spec: RuntimeSpec) -> dict:
    """The params layer: what the definition and its base set, in order (stop as a list)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in spec.parameters.items()}


def copy_model(store: Store, src: str, dst: str) -> None:
    """`corral cp`: a second name for the same manifest."""
    store.copy(src, dst)


def delete_models(store: Store, model_names: list[str]) -> list[Digest]:
    """`corral rm`: remove manifests, then the blobs nothing else uses."""
    removed: list[Digest] = []
    for name in model_names:
        removed += store.delete(name)
    return removed


__all__ = ["Created", "Fetch", "StoreError", "StoreResolver", "copy_model", "create_model", "delete_models"]


def create_from_request(store: Store, models: object, name: str, fields: dict,
                        progress: Callable[..., None] | None = None, fetch: Fetch | None = None) -> Created:
    """/api/create with Ollama's current request shape (from, files, adapters, template, system,
    parameters, messages, license, requires, parser, renderer): the same validation and compile as a definition file;
    `fetch` brings a `from` model the store lacks."""
    say = progress or (lambda *_a, **_k: None)
    where = Span("<request>", 1, 1, 1, 1)
    b = Builder("<request>", [], "toml")
    files = fields.get("files") or {}
    if fields.get("quantize"):
        b.error("quantize: Corral does not quantize models yet", where,
                "quantize with llama.cpp's llama-quantize, then create from the GGUF")
    if files:
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            b.error("files: expected an object of file name -> sha256 digest", where)
        else:
            _from_files(store, files, b, where)
    elif isinstance(fields.get("from"), str):
        b.set_from(fields["from"], where)
    for digest in (fields.get("adapters") or {}).values():
        if isinstance(digest, str) and store.has_blob(digest):
            b.add_adapter(str(store.blob_path(digest)), where)
        else:
            b.error(f"adapters: blob {digest} is not in the store", where, "upload it with POST /api/blobs first")
    for key in ("template", "system", "requires", "parser", "renderer"):
        value = fields.get(key)
        if value is not None:
            if isinstance(value, str):
                b.set_text(key, value, where)  # type: ignore[arg-type]
            else:
                b.error(f"{key}: expected a string", where)
    licenses = fields.get("license")
    for text in ([licenses] if isinstance(licenses, str) else licenses or []):
        b.add_license(str(text), where)
    for key, value in (fields.get("parameters") or {}).items():
        b.add_parameter(key, value, where, where, as_text=False, key=f"parameters.{key}")
    for i, m in enumerate(fields.get("messages") or []):
        if isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content", ""), str):
            b.add_message(m["role"], m.get("content", ""), where, where)
        else:
            b.error(f"messages.{i}: expected an object with role and content", where)
    parsed = b.finish()
    options = getattr(models, "options")
    return create_model(store, name, parsed.definition, base_dir=store.root, options=options,
                        status=lambda message: say(message), fetch=fetch)


def _from_files(store: Store, files: dict[str, str], b: Builder, where: Span) -> None:
    """/api/create's `files`: the model GGUF becomes FROM and an mmproj GGUF among them PROJECTOR,
    as Ollama's create sorts a vision model's two files by their architecture."""
    ggufs = [k for k in files if k.lower().endswith(".gguf")] or list(files)
    projectors = [k for k in ggufs if _is_projector(store, files[k])]
    models = [k for k in ggufs if k not in projectors]
    if len(models) > 1 or len(projectors) > 1:
        b.error(f"files: {len(models)} model and {len(projectors)} projector GGUFs; a model has one of each "
                "at most", where, "a split GGUF is created from its first shard's file")
        return
    if not models:
        b.error("files: no model GGUF, only a projector", where, "send the model's GGUF with it")
        return
    b.set_from(files[models[0]], where)
    if projectors:
        b.set_projector(str(store.blob_path(files[projectors[0]])), where)


def _is_projector(store: Store, digest: str) -> bool:
    """Whether an uploaded blob is a multimodal projector GGUF (architecture clip)."""
    try:
        if not store.has_blob(digest):
            return False
        return check_gguf(store.blob_path(digest)).metadata.get("general.architecture") == "clip"
    except (GGUFError, StoreError, OSError, ValueError):
        return False  # the compile that follows reports what is wrong with it
