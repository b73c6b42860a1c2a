"""Where FROM and ADAPTER point: a GGUF file, a blob digest, or a model already in the store.

The compiler sees the store only through the `ModelResolver` protocol (the runtime implements
it), so data flows one way and compile tests use a plain in-memory resolver.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from corral.compiler.errors import UnknownModelError, WeightsError
from corral.compiler.spec import ChatMessage, WeightsRef
from corral.dsl.parameters import ParamValue
from corral.dsl.span import Span

DIGEST = re.compile(r"^@?sha256[:-]([0-9a-fA-F]{64})$")
SHARD_NAME = re.compile(r"^(.+)-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)  # llama.cpp's split file names


@dataclass(frozen=True)
class ParentModel:
    """The model a definition's FROM names, with what the definition inherits from it."""

    name: str
    weights: WeightsRef
    adapters: tuple[WeightsRef, ...] = ()
    projector: WeightsRef | None = None  # a multimodal projector (mmproj) GGUF
    splits: tuple[WeightsRef, ...] = ()  # a split GGUF's further shards, in order
    template: str | None = None
    system: str | None = None
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    messages: tuple[ChatMessage, ...] = ()
    licenses: tuple[str, ...] = ()


class ModelResolver(Protocol):
    def model(self, name: str) -> ParentModel | None:
        """The stored model called `name`, or None."""

    def blob(self, digest: str) -> Path | None:
        """The path of blob `sha256:<hex>`, or None when the store lacks it."""

    # Optional: `split_shards(first: Path) -> tuple[WeightsRef, ...] | None`, the further shards
    # of a split GGUF whose first shard is the stored file `first` (the compiler asks for it with
    # getattr, so a resolver without it finds shards by their file names only).


class NoModels:
    """A resolver for definitions that may only name files (no store at hand)."""

    def model(self, name: str) -> ParentModel | None:
        return None

    def blob(self, digest: str) -> Path | None:
        return None


def weights_ref(path: Path, digest: str | None = None) -> WeightsRef:
    st = path.stat()
    return WeightsRef(path=str(path), size=st.st_size, digest=digest,
                      mtime_ns=None if digest else st.st_mtime_ns)


def looks_like_path(value: str) -> bool:
    """A FROM that can only mean a file: a missing one is 'no such file', not 'unknown model'."""
    return (value.startswith(("/", "./", "../", "~", "\\", ".\\")) or value.lower().endswith((".gguf", ".bin"))
            or os.sep in value and ":" not in value.split(os.sep)[0] and value.count("/") > 2)


def expand(value: str, base_dir: Path) -> Path:
    """`~` and `~user` expanded; relative paths taken from the definition's folder."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base_dir / path)


def find_weights(path: Path, span: Span | None, what: str = "FROM") -> Path:
    """The GGUF file a FROM path names: the file itself, or the one GGUF in a folder."""
    if path.is_file():
        return path
    if path.is_dir():
        if any(path.glob("*.safetensors")) or any(path.glob("*/*.safetensors")):
            raise WeightsError(
                f"{what} {path} is a safetensors model; Corral runs GGUF files", span,
                hint="convert it with llama.cpp's convert_hf_to_gguf.py, then point FROM at the .gguf file")
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        if not ggufs:
            raise WeightsError(f"{what} {path} is a folder with no .gguf file", span)
        names = ", ".join(p.name for p in ggufs[:5])
        raise WeightsError(f"{what} {path} holds several GGUF files ({names})", span,
                           hint="name the one to use")
    raise WeightsError(f"{what} {path}: no such file", span,
                       hint="paths are relative to the definition's folder")


def resolve_model(resolver: ModelResolver, name: str, span: Span | None) -> ParentModel:
    base = resolver.model(name)
    if base is None:
        raise UnknownModelError(f"model '{name}' not found", span,
                                hint=f"run `corral pull {name}`, or point FROM at a GGUF file")
    return base
