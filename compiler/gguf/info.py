"""What a GGUF model is: architecture, size, quantization, shape, template and tensor sizes.

`read_model_info` runs the bounded header check (`gguf_check`) and builds a ModelInfo from what
the check read. It does not hand the file to `gguf.GGUFReader` afterwards: the reader turns every
item of the tokenizer arrays into a numpy object and takes 7 s on Gemma 3's 262k vocabulary,
where the check's walk takes 30 ms and already holds every value needed. The tests compare both
readers on the real models so the two cannot drift apart.

The per-layer byte sums feed the memory planner (`plan`): llama.cpp places weights a layer at a
time, so the planner needs `blk.N.*` per layer, the input embedding (always kept on the CPU) and
the output head (placed like one more layer).

A split GGUF (llama.cpp's gguf-split: `split.no`, `split.count`, `split.tensors.count` in every
shard, the model's metadata in the first) is one model: `read_split_info` checks every shard and
describes the model from the first shard's metadata and the tensors of all of them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from gguf import LlamaFileType
from pydantic import BaseModel, ConfigDict, Field

from corral.compiler.errors import GGUFError
from corral.compiler.gguf.check import (ArrayValue, GGUFHeader, Scalar, TensorEntry, check_gguf, read_array_items,
                                        read_array_strings)

_LAYER = re.compile(r"blk\.(\d+)\.")
INPUT_TENSORS = frozenset({"token_embd.weight", "token_embd_norm.weight", "token_embd_norm.bias"})
MAX_SPLITS = 1024  # llama.cpp's gguf-split numbers shards with five digits; real sets have a few dozen
MAX_BLOCKS = 4096  # the deepest real models have ~200 layers; a crafted count must not size our lists


class TensorSummary(BaseModel):
    """One tensor as `ollama show -v` lists it, plus its size."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int


class ModelInfo(BaseModel):
    """The facts about a GGUF model that Corral shows and plans memory with."""

    model_config = ConfigDict(frozen=True)

    path: str
    file_size: int
    gguf_version: int
    architecture: str
    name: str | None
    parameter_count: int
    parameter_size: str
    quantization: str
    file_type: int | None
    context_length: int | None
    block_count: int
    embedding_length: int
    feed_forward_length: int | None
    head_count: int
    head_count_kv: int  # the largest over the layers
    head_count_kv_per_layer: tuple[int, ...]
    key_length: int
    value_length: int
    sliding_window: int | None
    vocab_size: int
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    bos_token: str | None
    eos_token: str | None
    layer_bytes: tuple[int, ...]  # weights of blk.N.*, one entry per layer
    input_bytes: int  # token embedding; llama.cpp always keeps it on the CPU
    output_bytes: int  # output head + final norm + other non-layer tensors, placed like a layer
    tied_embeddings: bool  # no output.weight: the head reuses token_embd
    tied_copy_bytes: int  # a GPU-resident tied head is a second copy of token_embd: its size, else 0
    tensors: tuple[TensorSummary, ...] = Field(repr=False)

    @property
    def weights_bytes(self) -> int:
        """Bytes of tensor data in the file."""
        return sum(t.n_bytes for t in self.tensors)


def read_model_info(path: str | Path) -> ModelInfo:
    """Check the GGUF at `path` and describe the model in it.

    Raises GGUFError when the file is malformed or is not a model (an adapter, a projector).
    """
    header = check_gguf(path)
    return model_info_from_header(header)


def split_count(header: GGUFHeader) -> int:
    """How many files the model is split into (`split.count`; 1 for an ordinary GGUF)."""
    count = header.metadata.get("split.count")
    if count is None:
        return 1
    if not _is_int(count) or not 1 <= count <= MAX_SPLITS:
        raise GGUFError(f"invalid GGUF: split.count is {count!r}", hint="the file is corrupt")
    return int(count)


def read_split_info(paths: Sequence[str | Path]) -> ModelInfo:
    """Check every shard of a split GGUF (in order) and describe the model they make together.

    As llama.cpp's loader wants them: shard k says `split.no = k` and the same `split.count`
    (the number of files given), the first holds the model's metadata, tensor names are unique
    across the shards and add up to `split.tensors.count`. The ModelInfo is the first shard's
    metadata with the tensors and sizes of all the shards.
    """
    headers = [check_gguf(p) for p in paths]
    for k, h in enumerate(headers):
        where = f"shard {k + 1} of {len(headers)} ({Path(h.path).name})"
        no, count = h.metadata.get("split.no"), h.metadata.get("split.count")
        if not _is_int(no) or not _is_int(count):
            raise GGUFError(f"invalid split GGUF: {where} lacks split.no or split.count",
                            hint="the shards must be written by llama.cpp's gguf-split or convert script")
        if count != len(headers) or no != k:
            raise GGUFError(f"invalid split GGUF: {where} says it is shard {no + 1} of {count}",
                            hint="the shards are in the wrong order, or from different models")
    tensors = tuple(t for h in headers for t in h.tensors)
    names = Counter(t.name for t in tensors)
    if dupes := sorted(n for n, c in names.items() if c > 1):
        raise GGUFError(f"invalid split GGUF: tensor '{dupes[0]}' is in more than one shard", hint="the file is corrupt")
    declared = headers[0].metadata.get("split.tensors.count")
    if _is_int(declared) and declared != len(tensors):
        raise GGUFError(f"invalid split GGUF: split.tensors.count is {declared} but the shards hold {len(tensors)} "
                        "tensors", hint="a shard is missing or from another model")
    first = headers[0]
    whole = replace(first, file_size=sum(h.file_size for h in headers), tensors=tensors)
    return model_info_from_header(whole)


def model_info_from_header(header: GGUFHeader) -> ModelInfo:
    """Build a ModelInfo from an already checked header."""
    meta = header.metadata
    arch = _required_str(meta, "general.architecture")
    kind = meta.get("general.type")
    if kind == "adapter":
        raise GGUFError("this GGUF is a LoRA adapter, not a model", hint="name it in ADAPTER, not FROM")
    if arch == "clip" or kind in ("projector", "mmproj"):
        raise GGUFError("this GGUF is a vision projector, not a model", hint="load it beside its model, not as FROM")

    blocks = _required_int(meta, f"{arch}.block_count")
    if blocks > MAX_BLOCKS:
        raise GGUFError(f"implausible GGUF: {arch}.block_count is {blocks} (the limit is {MAX_BLOCKS})")
    embd = _required_int(meta, f"{arch}.embedding_length")
    heads = _per_layer(meta, f"{arch}.attention.head_count", blocks, None)
    n_head = max(heads)
    if n_head <= 0:
        raise GGUFError(f"invalid GGUF: {arch}.attention.head_count is {n_head}", hint="the file is corrupt")
    kv_heads = _per_layer(meta, f"{arch}.attention.head_count_kv", blocks, heads)
    key_length = _int(meta, f"{arch}.attention.key_length") or embd // n_head
    value_length = _int(meta, f"{arch}.attention.value_length") or embd // n_head

    tensors = tuple(
        TensorSummary(name=t.name, type=t.type_name, shape=t.shape, n_elements=t.n_elements, n_bytes=t.n_bytes)
        for t in header.tensors
    )
    layer_bytes, input_bytes, output_bytes, tied_copy = _group(header.tensors, blocks)
    params = sum(t.n_elements for t in header.tensors)
    bos, eos = _int(meta, "tokenizer.ggml.bos_token_id"), _int(meta, "tokenizer.ggml.eos_token_id")
    texts = _token_texts(header, {i for i in (bos, eos) if i is not None})
    file_type = _int(meta, "general.file_type")
    return ModelInfo(
        path=header.path,
        file_size=header.file_size,
        gguf_version=header.version,
        architecture=arch,
        name=_str(meta, "general.name"),
        parameter_count=params,
        parameter_size=parameter_size_label(params),
        quantization=quantization_label(file_type, header.tensors),
        file_type=file_type,
        context_length=_int(meta, f"{arch}.context_length"),
        block_count=blocks,
        embedding_length=embd,
        feed_forward_length=_first_int(meta, f"{arch}.feed_forward_length"),
        head_count=n_head,
        head_count_kv=max(kv_heads) if kv_heads else 0,
        head_count_kv_per_layer=kv_heads,
        key_length=key_length,
        value_length=value_length,
        sliding_window=_int(meta, f"{arch}.attention.sliding_window"),
        vocab_size=_vocab_size(meta, arch, header.tensors),
        chat_template=_str(meta, "tokenizer.chat_template"),
        bos_token_id=bos,
        eos_token_id=eos,
        bos_token=texts.get(bos) if bos is not None else None,
        eos_token=texts.get(eos) if eos is not None else None,
        layer_bytes=layer_bytes,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        tied_embeddings=tied_copy > 0,
        tied_copy_bytes=tied_copy,
        tensors=tensors,
    )


# /api/show's model_info leaves out what it shows elsewhere (the name, the template), as Ollama does,
# and without `verbose` gives long arrays (the tokenizer's) as null: megabytes nobody asked for.
SHOWN_ELSEWHERE = frozenset({"general.name", "tokenizer.chat_template"})
SHOWN_STRINGS = 64  # string arrays up to this long are shown without verbose (check.py decodes them)
SHOWN_NUMBERS = 1024  # number arrays (per-layer hyperparameters) up to this long likewise
PER_TOKEN = "tokenizer.ggml."  # its arrays (tokens, scores, merges, token_type) need verbose whatever their length


def show_metadata(headers: Sequence[GGUFHeader], *, verbose: bool = False) -> dict[str, Any]:
    """The GGUF's metadata as `/api/show` gives it in `model_info`, from checked headers (a split
    model's shards, in order: the metadata is the first's, the parameter count all of theirs)."""
    first = headers[0]
    out: dict[str, Any] = {}
    for key, value in first.metadata.items():
        if key in SHOWN_ELSEWHERE:
            continue
        if isinstance(value, ArrayValue):
            limit = SHOWN_STRINGS if value.item_type == "string" else SHOWN_NUMBERS
            short = value.items is not None and value.length <= limit and not key.startswith(PER_TOKEN)
            if verbose:
                out[key] = [_json_scalar(v) for v in read_array_items(first.path, value)]
            else:
                out[key] = [_json_scalar(v) for v in value.items] if short and value.items is not None else None
        else:
            out[key] = _json_scalar(value)
    out["general.parameter_count"] = sum(t.n_elements for h in headers for t in h.tensors)
    return dict(sorted(out.items()))


def show_tensors(headers: Sequence[GGUFHeader]) -> list[dict[str, Any]]:
    """`/api/show`'s `tensors` (with `verbose`): name, type and shape (GGUF order), as Ollama lists them."""
    return [{"name": t.name, "type": t.type_name, "shape": list(t.shape)} for h in headers for t in h.tensors]


def _json_scalar(value: Scalar) -> Scalar:
    """A float32 as its shortest decimal (1e-05, not 9.999999747378752e-06), as Go prints one."""
    if isinstance(value, float) and math.isfinite(value):
        single = np.float32(value)
        if float(single) == value:  # it was a float32 in the file (a float64 would not round-trip)
            return float(str(single))
    return value


def parameter_size_label(n: int) -> str:
    """The parameter count the way Ollama prints it (format.HumanNumber): 134.52M, 8.0B, 7B.

    Whole numbers lose their decimals; otherwise billions keep one decimal, millions two.
    """
    for unit, scale, decimals in (("B", 1_000_000_000, 1), ("M", 1_000_000, 2)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{decimals}f}{unit}"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def quantization_label(file_type: int | None, tensors: tuple[TensorEntry, ...]) -> str:
    """"Q4_K_M" from general.file_type; without it, the type holding most bytes of matrix weights."""
    if file_type is not None and file_type != LlamaFileType.GUESSED:
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            name = ""
        if name:
            return "F32" if name == "ALL_F32" else name.removeprefix("MOSTLY_")
    weight: Counter[str] = Counter()
    for t in tensors:
        if len(t.shape) >= 2:
            weight[t.type_name] += t.n_bytes
    if not weight:
        weight.update({t.type_name: t.n_bytes for t in tensors})
    return weight.most_common(1)[0][0] if weight else "unknown"


def _group(tensors: tuple[TensorEntry, ...], blocks: int) -> tuple[tuple[int, ...], int, int, int]:
    """Sum weights per layer, for the input embedding and for the output head; size a tied head."""
    layers = [0] * blocks
    input_bytes = output_bytes = 0
    names = {t.name: t for t in tensors}
    for t in tensors:
        match = _LAYER.match(t.name)
        if match:
            index = int(match.group(1))
            if index >= blocks:
                raise GGUFError(
                    f"invalid GGUF: tensor '{t.name}' belongs to layer {index} but the model has {blocks} layers",
                    hint="the file is corrupt",
                )
            layers[index] += t.n_bytes
        elif t.name in INPUT_TENSORS:
            input_bytes += t.n_bytes
        else:
            output_bytes += t.n_bytes
    tied = "output.weight" not in names and "token_embd.weight" in names
    tied_copy = names["token_embd.weight"].n_bytes if tied else 0
    return tuple(layers), input_bytes, output_bytes, tied_copy


def _token_texts(header: GGUFHeader, ids: set[int]) -> dict[int, str]:
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, ArrayValue) or not ids:
        return {}
    if tokens.items is not None:
        return {i: str(tokens.items[i]) for i in ids if 0 <= i < tokens.length}
    return read_array_strings(header.path, tokens, ids)


def _vocab_size(meta: dict[str, Scalar | ArrayValue], arch: str, tensors: tuple[TensorEntry, ...]) -> int:
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, ArrayValue):
        return tokens.length
    declared = _int(meta, f"{arch}.vocab_size")
    if declared is not None:
        return declared
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    return embd.shape[1] if embd is not None and len(embd.shape) > 1 else 0


def _per_layer(
    meta: dict[str, Scalar | ArrayValue], key: str, blocks: int, default: tuple[int, ...] | None
) -> tuple[int, ...]:
    """A hyperparameter that is either one number or one number per layer."""
    value = meta.get(key)
    if value is None:
        if default is None:
            raise GGUFError(f"GGUF metadata lacks '{key}', which a model needs", hint="the file may be incomplete")
        return default
    if isinstance(value, ArrayValue):
        items = value.items or ()
        if value.length != blocks or not all(_is_int(v) for v in items) or len(items) != blocks:
            message = f"invalid GGUF: '{key}' should hold {blocks} integers, one per layer"
            raise GGUFError(message, hint="the file is corrupt")
        return tuple(int(v) for v in items)
    if not _is_int(value):
        raise GGUFError(f"invalid GGUF: '{key}' should be an integer, got {value!r}", hint="the file is corrupt")
    return (int(value),) * blocks


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(meta: dict[str, Scalar | ArrayValue], key: str) -> int | None:
    value = meta.get(key)
    return int(value) if _is_int(value) else None


def _first_int(meta: dict[str, Scalar | ArrayValue], key: str) -> int | None:
    """An integer, or the first of a per-layer array (feed_forward_length varies per layer in some models)."""
    value = meta.get(key)
    if isinstance(value, ArrayValue) and value.items and _is_int(value.items[0]):
        return int(value.items[0])
    return _int(meta, key)


def _str(meta: dict[str, Scalar | ArrayValue], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _required_int(meta: dict[str, Scalar | ArrayValue], key: str) -> int:
    value = _int(meta, key)
    if value is None or value < 0:
        raise GGUFError(f"GGUF metadata lacks '{key}', which a model needs", hint="the file may be incomplete")
    return value


def _required_str(meta: dict[str, Scalar | ArrayValue], key: str) -> str:
    value = _str(meta, key)
    if not value:
        raise GGUFError(f"GGUF metadata lacks '{key}', which a model needs", hint="the file may be incomplete")
    return value
