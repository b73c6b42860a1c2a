"""Tiny GGUF files for tests: valid random-weight llama models, and broken ones.

`write_tiny_llama` writes a real llama-architecture model with gguf.GGUFWriter: a few layers, a
minimal SentencePiece vocabulary (control tokens, the 256 byte tokens, a handful of words), so
llama.cpp can load and run it. The broken variants are made by byte surgery on such a file (bad
magic, truncation, absurd counts and lengths) or built field by field with `raw_gguf` when a test
needs one precise defect (an unknown value type, five dimensions, a misaligned offset, ...).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from tests.specs import CHATML

WORDS = ["▁hello", "▁world", "▁the", "▁a", "▁is", "▁and", "▁to", "▁of", "▁in", "▁it"]
FILE_TYPES = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


@dataclass(frozen=True)
class TinyLlama:
    """The shape of a tiny model; tests compare read_model_info against it."""

    layers: int = 2
    embd: int = 64
    heads: int = 4
    kv_heads: int = 2
    ff: int = 128
    context: int = 512
    quant: str = "F32"  # F32, F16 or Q8_0 (matrices; norms stay F32)
    tied: bool = False  # no output.weight: the head reuses token_embd
    chat_template: str | None = CHATML
    file_type: bool = True  # write general.file_type
    name: str = "Tiny Llama"
    architecture: str = "llama"  # the keys' prefix; "bert" makes an embedding model for capability tests
    fim: bool = False  # name fill-in-the-middle tokens (tokenizer.ggml.fim_pre/suf/mid_token_id)
    pooling: int | None = None  # write <arch>.pooling_type (1: mean), which makes it an embedding model

    @property
    def vocab(self) -> list[str]:
        return ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + WORDS

    @property
    def head_dim(self) -> int:
        return self.embd // self.heads

    def matrices(self) -> dict[str, tuple[int, int]]:
        """Every 2-D weight as numpy shape (rows, row length)."""
        e, f, kv = self.embd, self.ff, self.kv_heads * self.head_dim
        shapes = {"token_embd.weight": (len(self.vocab), e)}
        if not self.tied:
            shapes["output.weight"] = (len(self.vocab), e)
        for i in range(self.layers):
            shapes |= {
                f"blk.{i}.attn_q.weight": (e, e),
                f"blk.{i}.attn_k.weight": (kv, e),
                f"blk.{i}.attn_v.weight": (kv, e),
                f"blk.{i}.attn_output.weight": (e, e),
                f"blk.{i}.ffn_gate.weight": (f, e),
                f"blk.{i}.ffn_up.weight": (f, e),
                f"blk.{i}.ffn_down.weight": (e, f),
            }
        return shapes

    def norms(self) -> list[str]:
        return ["output_norm.weight"] + [f"blk.{i}.{n}_norm.weight" for i in range(self.layers) for n in ("attn", "ffn")]

    @property
    def parameter_count(self) -> int:
        return sum(r * c for r, c in self.matrices().values()) + self.embd * len(self.norms())


def write_tiny_llama(path: Path, spec: TinyLlama = TinyLlama(), seed: int = 0) -> Path:
    """Write `spec` as a GGUF at `path` with small random weights; returns `path`."""
    _write(gguf.GGUFWriter(str(path), spec.architecture), spec, seed)
    return path


def write_tiny_llama_split(path: Path, spec: TinyLlama = TinyLlama(), shards: int = 3, seed: int = 0) -> list[Path]:
    """Write `spec` as a split GGUF, as llama.cpp's gguf-split and convert scripts write one.

    gguf.GGUFWriter with `split_max_tensors` writes `STEM-0000k-of-0000N.gguf` beside `path`
    (`path` itself is not written): each shard a valid GGUF with its own tensors and the keys
    `split.no` (u16, from 0), `split.count` (u16) and `split.tensors.count` (i32); the first
    holds all the model's metadata. Returns the shards in order.
    """
    tensors = len(spec.matrices()) + len(spec.norms())
    per = -(-tensors // shards)
    assert -(-tensors // per) == shards, "that many shards would leave one empty"
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=per)
    _write(w, spec, seed)
    return [path.with_name(f"{path.stem}-{i:05d}-of-{shards:05d}.gguf") for i in range(1, shards + 1)]


def _write(w: gguf.GGUFWriter, spec: TinyLlama, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w.add_name(spec.name)
    w.add_context_length(spec.context)
    w.add_embedding_length(spec.embd)
    w.add_block_count(spec.layers)
    w.add_feed_forward_length(spec.ff)
    w.add_head_count(spec.heads)
    w.add_head_count_kv(spec.kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(spec.head_dim)
    if spec.file_type:
        w.add_file_type(FILE_TYPES[spec.quant])
    w.add_tokenizer_model("llama")
    w.add_token_list(spec.vocab)
    w.add_token_scores([0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(WORDS))])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(WORDS))  # unknown, control, byte, normal
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if spec.chat_template is not None:
        w.add_chat_template(spec.chat_template)
    if spec.fim:  # three words of the vocabulary stand in for the FIM tokens
        for key, token in (("fim_pre", 259), ("fim_suf", 260), ("fim_mid", 261)):
            w.add_uint32(f"tokenizer.ggml.{key}_token_id", token)
    if spec.pooling is not None:
        w.add_pooling_type(gguf.PoolingType(spec.pooling))
    qtype = gguf.GGMLQuantizationType[spec.quant]
    for name, shape in spec.matrices().items():
        data = gguf.quants.quantize((rng.standard_normal(shape) * 0.02).astype(np.float32), qtype)
        w.add_tensor(name, data, raw_dtype=qtype)
    for name in spec.norms():
        w.add_tensor(name, np.ones(spec.embd, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --- Broken variants of a valid file ------------------------------------------------------------


def _patched(src: Path, dst: Path, offset: int, raw: bytes) -> Path:
    data = bytearray(src.read_bytes())
    data[offset : offset + len(raw)] = raw
    dst.write_bytes(bytes(data))
    return dst


def with_magic(src: Path, dst: Path, magic: bytes = b"PK\x03\x04") -> Path:
    return _patched(src, dst, 0, magic)


def truncated(src: Path, dst: Path, size: int) -> Path:
    dst.write_bytes(src.read_bytes()[:size])
    return dst


def with_tensor_count(src: Path, dst: Path, count: int) -> Path:
    return _patched(src, dst, 8, struct.pack("<Q", count))


def with_first_key_length(src: Path, dst: Path, length: int) -> Path:
    """The first metadata key (general.architecture, at byte 24) claims `length` bytes."""
    return _patched(src, dst, 24, struct.pack("<Q", length))


def array_length_offset(src: Path, key: str) -> int:
    """Where the item count of array `key` sits, found with the gguf package's own reader."""
    field = gguf.GGUFReader(str(src)).fields[key]
    return field.offset + 8 + len(key.encode()) + 4 + 4  # key length, key, value type, item type


def with_array_length(src: Path, dst: Path, key: str, length: int) -> Path:
    return _patched(src, dst, array_length_offset(src, key), struct.pack("<Q", length))


# --- Files built field by field -----------------------------------------------------------------


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_str(key: str, value: str) -> bytes:
    return kv(key, 8, gstr(value))


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, 4, struct.pack("<I", value))


def tensor_info(name: str, dims: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack(
        "<IQ", ggml_type, offset
    )


def raw_gguf(
    kvs: list[bytes], infos: list[bytes] = (), data: bytes = b"", version: int = 3, alignment: int = 32
) -> bytes:
    """A GGUF file from ready-made entries: header, metadata, tensor infos, padding, data."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos)
    pad = -len(head) % alignment
    return head + b"\0" * pad + data


def minimal_kvs(arch: str = "llama") -> list[bytes]:
    """The keys read_model_info requires, for a 1-layer model."""
    return [
        kv_str("general.architecture", arch),
        kv_u32(f"{arch}.block_count", 1),
        kv_u32(f"{arch}.embedding_length", 32),
        kv_u32(f"{arch}.attention.head_count", 4),
    ]
