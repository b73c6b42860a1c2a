"""The bounded GGUF header check and ModelInfo: tiny written files, broken files, real models."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.compiler.errors import GGUFError, WeightsError
from corral.compiler.gguf.check import check_gguf
from corral.compiler.gguf.info import parameter_size_label, quantization_label, read_model_info
from tests import ggufs
from tests.ggufs import TinyLlama, kv, kv_str, kv_u32, minimal_kvs, raw_gguf, tensor_info, write_tiny_llama
from tests.specs import CHATML

SPECS = {
    "f32-template": TinyLlama(),
    "q8-tied": TinyLlama(quant="Q8_0", tied=True, layers=3),
    "f16-no-file-type": TinyLlama(quant="F16", file_type=False, chat_template=None, kv_heads=4),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ggufs")
    return {key: write_tiny_llama(root / f"{key}.gguf", spec) for key, spec in SPECS.items()}


@pytest.fixture(scope="module")
def tiny(files: dict[str, Path]) -> Path:
    return files["f32-template"]


# --- Valid tiny files ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", SPECS)
def test_tiny_model_info(files: dict[str, Path], key: str) -> None:
    spec, info = SPECS[key], read_model_info(files[key])
    assert (info.architecture, info.name, info.block_count) == ("llama", "Tiny Llama", spec.layers)
    assert (info.head_count, info.head_count_kv, info.embedding_length) == (spec.heads, spec.kv_heads, spec.embd)
    assert (info.key_length, info.value_length) == (spec.head_dim, spec.head_dim)
    assert info.head_count_kv_per_layer == (spec.kv_heads,) * spec.layers
    assert (info.feed_forward_length, info.context_length, info.vocab_size) == (spec.ff, spec.context, len(spec.vocab))
    assert info.quantization == spec.quant
    assert info.parameter_count == spec.parameter_count
    assert info.chat_template == spec.chat_template
    assert (info.bos_token_id, info.bos_token, info.eos_token_id, info.eos_token) == (1, "<s>", 2, "</s>")
    assert info.tied_embeddings is spec.tied
    assert info.file_size == files[key].stat().st_size


@pytest.mark.parametrize("key", SPECS)
def test_tensor_sizes_match_the_gguf_reader(files: dict[str, Path], key: str) -> None:
    """gguf.GGUFReader is the oracle for every tensor and for the per-layer sums."""
    info, reader = read_model_info(files[key]), gguf.GGUFReader(str(files[key]))
    ours = [(t.name, t.type, t.shape, t.n_bytes) for t in info.tensors]
    theirs = [(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_bytes)) for t in reader.tensors]
    assert ours == theirs
    per_layer = [sum(int(t.n_bytes) for t in reader.tensors if t.name.startswith(f"blk.{i}.")) for i in range(info.block_count)]
    assert list(info.layer_bytes) == per_layer
    assert info.weights_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert info.input_bytes + sum(info.layer_bytes) + info.output_bytes == info.weights_bytes
    embd = next(int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight")
    assert info.tied_copy_bytes == (embd if SPECS[key].tied else 0)


def test_header_check_reads_what_the_writer_wrote(tiny: Path) -> None:
    header = check_gguf(tiny)
    reader = gguf.GGUFReader(str(tiny))
    assert (header.version, header.alignment, header.data_offset) == (3, 32, reader.data_offset)
    assert header.metadata["tokenizer.chat_template"] == CHATML
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert tokens.length == 269 and tokens.items is None  # long string arrays are located, not kept
    assert [t.offset for t in header.tensors] == [int(t.data_offset) for t in reader.tensors]


def test_model_info_is_frozen_and_hides_tensors_from_repr(tiny: Path) -> None:
    info = read_model_info(tiny)
    with pytest.raises(Exception):
        info.block_count = 3  # type: ignore[misc]
    assert "tensors=" not in repr(info)
    assert info.weights_bytes - sum(info.layer_bytes) == info.input_bytes + info.output_bytes


# --- Broken files: every defect gets its exact message ------------------------------------------


def _tiny_facts(tiny: Path) -> dict[str, int]:
    reader = gguf.GGUFReader(str(tiny))
    last = reader.tensors[-1]
    return {"size": tiny.stat().st_size, "last_end": int(last.data_offset) + int(last.n_bytes)}


BROKEN = [
    ("bad magic", lambda s, d: ggufs.with_magic(s, d), "not a GGUF file: bad magic b'PK\\x03\\x04' (expected b'GGUF')"),
    ("empty", lambda s, d: ggufs.truncated(s, d, 0), "not a GGUF file: only 0 bytes long (b'')"),
    (
        "cut in the header",
        lambda s, d: ggufs.truncated(s, d, 1024),
        "truncated GGUF: array 'tokenizer.ggml.tokens' says 269 items but the file ends at byte 1024",
    ),
    (
        "cut after the counts",
        lambda s, d: ggufs.truncated(s, d, 30),
        "truncated GGUF: header says 21 tensors but the file ends at byte 30",
    ),
    (
        "more tensors than the file holds",
        lambda s, d: ggufs.truncated(ggufs.with_tensor_count(s, d, 291), d, 1024),
        "truncated GGUF: header says 291 tensors but the file ends at byte 1024",
    ),
    (
        "absurd tensor count",
        lambda s, d: ggufs.with_tensor_count(s, d, 2**40),
        "implausible GGUF: header says 1099511627776 tensors (the limit is 1048576)",
    ),
    (
        "absurd string length",
        lambda s, d: ggufs.with_first_key_length(s, d, 2**62),
        "implausible GGUF: the key of metadata entry 1 of 19 is 4611686018427387904 bytes long (the limit is 65536)",
    ),
    (
        "huge array length",
        lambda s, d: ggufs.with_array_length(s, d, "tokenizer.ggml.tokens", 2**40),
        "implausible GGUF: array 'tokenizer.ggml.tokens' has 1099511627776 items (the limit is 67108864)",
    ),
    (
        "array past the end",
        lambda s, d: ggufs.with_array_length(s, d, "tokenizer.ggml.tokens", 2**25),
        "truncated GGUF: array 'tokenizer.ggml.tokens' says 33554432 items but the file ends at byte 442080",
    ),
    (
        "tensor data cut",
        lambda s, d: ggufs.truncated(s, d, 441980),
        "truncated GGUF: tensor 'blk.1.ffn_norm.weight' data ends at byte 442080 but the file ends at byte 441980",
    ),
]


@pytest.mark.parametrize("make, message", [(m, msg) for _, m, msg in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_variants_of_a_written_file(tiny: Path, tmp_path: Path, make, message: str) -> None:
    assert _tiny_facts(tiny) == {"size": 442080, "last_end": 442080}  # the numbers the messages quote
    broken = make(tiny, tmp_path / "broken.gguf")
    with pytest.raises(GGUFError) as caught:
        check_gguf(broken)
    assert caught.value.message == message
    assert caught.value.hint
    with pytest.raises(GGUFError):
        read_model_info(broken)  # the info reader runs the check first


def _f32(name: str, n: int = 8, offset: int = 0) -> bytes:
    return tensor_info(name, (n,), 0, offset)


RAW = [
    ("version 1", raw_gguf(minimal_kvs(), version=1), "invalid GGUF: version 1 is no longer readable"),
    ("version 7", raw_gguf(minimal_kvs(), version=7), "invalid GGUF: unknown version 7 (expected 2 or 3)"),
    ("big-endian", b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "invalid GGUF: the file is big-endian"),
    (
        "string past the end",
        b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1000) + b"abc" * 10,
        "truncated GGUF: metadata entry 1 of 1 needs bytes 32..1032 but the file ends at byte 62",
    ),
    ("unknown value type", raw_gguf([kv("x", 13, b"\0" * 8)]), "invalid GGUF: metadata key 'x' has unknown value type 13"),
    (
        "array of arrays",
        raw_gguf([kv("x", 9, struct.pack("<IQ", 9, 1))]),
        "invalid GGUF: metadata key 'x' is an array of arrays, which llama.cpp cannot read",
    ),
    ("unknown item type", raw_gguf([kv("x", 9, struct.pack("<IQ", 77, 0))]), "invalid GGUF: array 'x' has unknown item type 77"),
    ("duplicate key", raw_gguf([kv_u32("a", 1), kv_u32("a", 2)]), "invalid GGUF: metadata key 'a' appears twice"),
    (
        "key not UTF-8",
        raw_gguf([ggufs.gstr(b"\xff\xfe") + struct.pack("<II", 4, 0)]),
        "invalid GGUF: the key of metadata entry 1 of 1 is not valid UTF-8: b'\\xff\\xfe'",
    ),
    (
        "alignment not a power of two",
        raw_gguf([kv_u32("general.alignment", 48)]),
        "invalid GGUF: general.alignment must be a power of two, got 48",
    ),
    (
        "five dimensions",
        raw_gguf([], [tensor_info("t", (1, 1, 1, 1, 1))]),
        "invalid GGUF: tensor 't' has 5 dimensions (at most 4)",
    ),
    ("zero dimension", raw_gguf([], [tensor_info("t", (8, 0))]), "invalid GGUF: tensor 't' has a zero dimension [8, 0]"),
    ("unknown tensor type", raw_gguf([], [tensor_info("t", (8,), 99)]), "invalid GGUF: tensor 't' has unknown type 99"),
    (
        "rows not whole blocks",
        raw_gguf([], [tensor_info("t", (33, 2), 8)], b"\0" * 96),
        "invalid GGUF: tensor 't' rows of 33 are not whole Q8_0 blocks of 32",
    ),
    (
        "misaligned offset",
        raw_gguf([], [_f32("t", 8, 17)], b"\0" * 64),
        "invalid GGUF: tensor 't' data offset 17 is not a multiple of the alignment 32",
    ),
    ("duplicate tensor", raw_gguf([], [_f32("t"), _f32("t", 8, 32)], b"\0" * 64), "invalid GGUF: tensor 't' appears twice"),
    (
        "overlapping tensors",
        raw_gguf([], [_f32("a", 16), _f32("b", 8, 32)], b"\0" * 96),
        "invalid GGUF: tensor 'b' overlaps the data of tensor 'a'",
    ),
    (
        "tensor name too long",
        raw_gguf([], [_f32("n" * 64)]),
        "implausible GGUF: a tensor name is 64 bytes long (the limit is 63)",
    ),
    (
        "tensor data past the end",
        raw_gguf([], [_f32("t", 1024)], b"\0" * 64),
        "truncated GGUF: tensor 't' data ends at byte 4160 but the file ends at byte 128",
    ),
]


@pytest.mark.parametrize("data, message", [(d, m) for _, d, m in RAW], ids=[r[0] for r in RAW])
def test_built_defects(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "raw.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError) as caught:
        check_gguf(path)
    assert caught.value.message == message


@pytest.mark.parametrize(
    "head, hint_part",
    [
        (b"PK\x03\x04rest", "ZIP archive"),
        (b"version https://git-lfs.github.com/spec/v1\n", "git lfs pull"),
        (b"tjgg\x01\x00\x00\x00", "old GGML/GGJT"),
        (b"<!DOCTYPE html><html>", "HTML"),
        (struct.pack("<Q", 120) + b'{"__metadata__":{}}', "safetensors"),
        (b"hello world", "Corral loads GGUF files"),
    ],
)
def test_bad_magic_names_the_real_format(tmp_path: Path, head: bytes, hint_part: str) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(head)
    with pytest.raises(GGUFError) as caught:
        check_gguf(path)
    assert caught.value.message.startswith("not a GGUF file: bad magic")
    assert hint_part in (caught.value.hint or "")


@pytest.mark.parametrize(
    "kvs, message",
    [
        ([kv_str("general.architecture", "llama")], "GGUF metadata lacks 'llama.block_count', which a model needs"),
        ([], "GGUF metadata lacks 'general.architecture', which a model needs"),
        (minimal_kvs() + [kv_str("general.type", "adapter")], "this GGUF is a LoRA adapter, not a model"),
        (minimal_kvs("clip"), "this GGUF is a vision projector, not a model"),
        (
            minimal_kvs()[:3] + [kv("llama.attention.head_count", 9, struct.pack("<IQ", 4, 2) + b"\0" * 8)],
            "invalid GGUF: 'llama.attention.head_count' should hold 1 integers, one per layer",
        ),
    ],
)
def test_model_info_needs_a_model(tmp_path: Path, kvs: list[bytes], message: str) -> None:
    path = tmp_path / "meta.gguf"
    path.write_bytes(raw_gguf(kvs))
    check_gguf(path)  # the header itself is well formed
    with pytest.raises(GGUFError) as caught:
        read_model_info(path)
    assert caught.value.message == message


def test_a_layer_beyond_block_count_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "layers.gguf"
    path.write_bytes(raw_gguf(minimal_kvs(), [_f32("blk.1.attn_norm.weight")], b"\0" * 32))
    with pytest.raises(GGUFError, match="belongs to layer 1 but the model has 1 layers"):
        read_model_info(path)


def test_unreadable_path_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as caught:
        check_gguf(tmp_path / "missing.gguf")
    assert not isinstance(caught.value, GGUFError)
    assert caught.value.message == f"cannot read weights file {tmp_path / 'missing.gguf'}: No such file or directory"
    with pytest.raises(WeightsError, match="Is a directory"):
        check_gguf(tmp_path)


def test_errors_pickle(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(GGUFError) as caught:
        check_gguf(ggufs.with_magic(tiny, tmp_path / "zip.gguf"))
    clone = pickle.loads(pickle.dumps(caught.value))
    assert (type(clone), clone.message, clone.hint) == (GGUFError, caught.value.message, caught.value.hint)


# --- Properties: nothing but GGUFError, whatever the bytes ---------------------------------------


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_bytes_raise_only_gguf_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "any.gguf"
    for blob in (data, b"GGUF" + struct.pack("<I", 3) + data):
        path.write_bytes(blob)
        try:
            read_model_info(path)
        except GGUFError:
            pass


# The tiny file's header ends at byte 8160: its counts sit at 8..24, its first key at 24.
HEADER_OFFSETS = st.one_of(st.integers(0, 64), st.integers(0, 8160))


@given(
    cuts=st.lists(st.tuples(HEADER_OFFSETS, st.binary(min_size=1, max_size=8)), max_size=4),
    size=st.one_of(st.none(), st.integers(0, 442_080)),
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_tiny_files_raise_only_gguf_error(tiny: Path, tmp_path: Path, cuts, size) -> None:
    """Overwrite bytes in the header region and maybe cut the file."""
    data = bytearray(tiny.read_bytes())
    for offset, raw in cuts:
        data[offset : offset + len(raw)] = raw
    path = tmp_path / "mutated.gguf"
    path.write_bytes(bytes(data[:size] if size is not None else data))
    try:
        read_model_info(path)
    except GGUFError:
        pass


# --- Labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, label",
    [
        (134_515_008, "134.52M"),  # SmolLM2 135M, as `ollama show` prints it
        (268_098_176, "268.10M"),
        (8_030_261_248, "8.0B"),
        (3_212_749_824, "3.2B"),
        (7_000_000_000, "7B"),
        (70_553_706_496, "70.6B"),
        (135_000_000, "135M"),
        (108_480, "108K"),
        (999, "999"),
    ],
)
def test_parameter_size_label(n: int, label: str) -> None:
    assert parameter_size_label(n) == label


@pytest.mark.parametrize(
    "file_type, label",
    [(15, "Q4_K_M"), (3, "Q4_1"), (0, "F32"), (1, "F16"), (32, "BF16"), (1024, "Q8_0"), (None, "Q8_0"), (999, "Q8_0")],
)
def test_quantization_label(files: dict[str, Path], file_type: int | None, label: str) -> None:
    tensors = check_gguf(files["q8-tied"]).tensors  # matrices Q8_0, norms F32: the fallback picks Q8_0
    assert quantization_label(file_type, tensors) == label


# --- Real models --------------------------------------------------------------------------------


@pytest.mark.model
def test_smollm2(smollm2_gguf: Path) -> None:
    info = read_model_info(smollm2_gguf)
    assert (info.architecture, info.block_count, info.quantization, info.parameter_size) == ("llama", 30, "Q4_1", "134.52M")
    assert (info.head_count, info.head_count_kv, info.embedding_length, info.context_length) == (9, 3, 576, 8192)
    assert (info.vocab_size, info.key_length, info.tied_embeddings) == (49152, 64, True)
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert info.weights_bytes == 96_576_768


@pytest.mark.model
def test_gemma3(gemma3_gguf: Path) -> None:
    info = read_model_info(gemma3_gguf)
    assert (info.architecture, info.block_count, info.quantization, info.parameter_size) == ("gemma3", 18, "Q4_K_M", "268.10M")
    assert (info.head_count, info.head_count_kv, info.key_length, info.value_length) == (4, 1, 256, 256)
    assert (info.context_length, info.sliding_window, info.vocab_size) == (32768, 512, 262144)
    assert (info.bos_token, info.eos_token) == ("<bos>", "<eos>")
    assert info.chat_template is None  # this published file carries no tokenizer.chat_template


@pytest.mark.model
def test_real_header_check_reads_a_bounded_prefix(gemma3_gguf: Path, tmp_path: Path) -> None:
    """The check reads the header and nothing past it, and steps over Gemma 3's 262k-token
    vocabulary without decoding it (decoding it all is what makes the gguf package's reader slow).

    A file with the same header and zeros, never written, for the weights says the same."""
    header = check_gguf(gemma3_gguf)
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert (tokens.length, tokens.items) == (262144, None)
    assert header.data_offset < header.file_size // 20
    prefix_only = tmp_path / "prefix.gguf"
    with gemma3_gguf.open("rb") as src, prefix_only.open("wb") as dst:
        dst.write(src.read(header.data_offset))
        dst.truncate(header.file_size)
    expected = read_model_info(gemma3_gguf).model_dump(exclude={"path"})
    assert read_model_info(prefix_only).model_dump(exclude={"path"}) == expected


@pytest.mark.model
def test_smollm2_metadata_matches_the_gguf_reader(smollm2_gguf: Path) -> None:
    header, reader = check_gguf(smollm2_gguf), gguf.GGUFReader(str(smollm2_gguf))
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        ours = header.metadata[key]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert ours.length == len(field.data), key
        elif field.types[0] == gguf.GGUFValueType.FLOAT32:
            assert ours == pytest.approx(field.contents()), key
        else:
            assert ours == field.contents(), key
    assert [(t.name, t.n_bytes, t.offset) for t in header.tensors] == [
        (t.name, int(t.n_bytes), int(t.data_offset)) for t in reader.tensors
    ]


@pytest.mark.model
@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_llama_cpp_agrees_on_size_and_parameters(which: str, tiny: Path, smollm2_gguf: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    path = tiny if which == "tiny" else smollm2_gguf
    info = read_model_info(path)
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_gpu_layers=0, verbose=False)
    try:
        assert llama_cpp.llama_model_n_params(llm.model) == info.parameter_count
        assert llama_cpp.llama_model_size(llm.model) == info.weights_bytes
        assert llama_cpp.llama_model_n_layer(llm.model) == info.block_count
    finally:
        llm.close()
