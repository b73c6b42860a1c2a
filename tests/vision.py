"""A tiny synthetic multimodal projector (mmproj) GGUF and a tiny PNG, for the vision tests.

No small vision model is packaged, so the tests give the SmolLM2 test model a projector generated
here: a CLIP-style encoder (llava's "mlp" projector type, as llama.cpp's clip.cpp reads it) with
one block of random weights, projecting into SmolLM2's 576-wide embeddings. What it "sees" is
noise; the tests check that the image's tokens reach the model and the answer streams.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import gguf
import numpy as np

IMAGE_SIZE = 64
PATCH_SIZE = 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # what one image costs in the prompt: one per patch
SMOLLM2_EMBD = 576


def write_projector(path: Path, text_embd: int = SMOLLM2_EMBD, seed: int = 0) -> Path:
    """An mmproj GGUF clip.cpp loads: llava-style ViT of one block plus a two-layer MLP projector."""
    rng = np.random.default_rng(seed)
    embd, ff, hidden, patches = 32, 64, 64, IMAGE_TOKENS

    def weights(*shape: int, dtype=np.float32) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(dtype)

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_string("general.name", "corral-test-projector")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.use_gelu", True)
    for key, value in (("embedding_length", embd), ("feed_forward_length", ff), ("block_count", 1),
                       ("projection_dim", text_embd), ("attention.head_count", 2),
                       ("image_size", IMAGE_SIZE), ("patch_size", PATCH_SIZE)):
        w.add_uint32(f"clip.vision.{key}", value)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    # numpy shapes are ggml's dimensions reversed: a (out, in) matrix is ne = [in, out].
    w.add_tensor("v.patch_embd.weight", weights(embd, 3, PATCH_SIZE, PATCH_SIZE, dtype=np.float16))
    w.add_tensor("v.patch_embd.bias", weights(embd))
    w.add_tensor("v.position_embd.weight", weights(patches, embd))
    for name, shape in (("attn_q", (embd, embd)), ("attn_k", (embd, embd)), ("attn_v", (embd, embd)),
                        ("attn_out", (embd, embd)), ("ffn_up", (ff, embd)), ("ffn_down", (embd, ff))):
        w.add_tensor(f"v.blk.0.{name}.weight", weights(*shape))
        w.add_tensor(f"v.blk.0.{name}.bias", weights(shape[0]))
    for name in ("ln1", "ln2"):
        w.add_tensor(f"v.blk.0.{name}.weight", np.ones(embd, dtype=np.float32))
        w.add_tensor(f"v.blk.0.{name}.bias", np.zeros(embd, dtype=np.float32))
    w.add_tensor("mm.0.weight", weights(hidden, embd))
    w.add_tensor("mm.0.bias", weights(hidden))
    w.add_tensor("mm.2.weight", weights(text_embd, hidden))
    w.add_tensor("mm.2.bias", weights(text_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def png_bytes(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A solid-colour RGB PNG, written with zlib and struct."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))
