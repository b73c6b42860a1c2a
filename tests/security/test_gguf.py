"""Hostile GGUFs: each case is refused by the bounded header check (compiler/gguf/check.py) before
the `gguf` package or llama.cpp reads a byte of it, with its exact message, by the compiler and by
the real server's /api/create over an uploaded blob (a 4xx JSON error naming no host path, the
server answering /api/version at once after).

Cases are built field by field (tests/ggufs.py raw_gguf) or by byte surgery on a valid tiny
llama; then hypothesis mutates that tiny file at random: the reader raises GGUFError or nothing,
and its memory stays bounded whatever the bytes claim.
"""

from __future__ import annotations

import hashlib
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from corral.compiler.errors import GGUFError
from corral.compiler.gguf.check import check_gguf
from corral.compiler.gguf.info import read_model_info
from tests import ggufs
from tests.ggufs import gstr, kv, kv_u32, minimal_kvs, raw_gguf, tensor_info, write_tiny_llama
from tests.security.conftest import assert_refused

BIG = 2**62


def _header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _f32(name: str, n: int = 8, offset: int = 0) -> bytes:
    return tensor_info(name, (n,), 0, offset)


# (case, file bytes, the exact message of the refusal)
CASES = [
    ("bad magic", b"GGML" + b"\0" * 60, "not a GGUF file: bad magic b'GGML' (expected b'GGUF')"),
    ("0 bytes", b"", "not a GGUF file: only 0 bytes long (b'')"),
    ("exactly GGUF", b"GGUF", "truncated GGUF: the header needs bytes 4..8 but the file ends at byte 4"),
    ("version 0", raw_gguf(minimal_kvs(), version=0), "invalid GGUF: unknown version 0 (expected 2 or 3)"),
    ("version 1", raw_gguf(minimal_kvs(), version=1), "invalid GGUF: version 1 is no longer readable"),
    ("version 4", raw_gguf(minimal_kvs(), version=4), "invalid GGUF: unknown version 4 (expected 2 or 3)"),
    ("version 2^31", raw_gguf(minimal_kvs(), version=2**31),
     "invalid GGUF: unknown version 2147483648 (expected 2 or 3)"),
    ("counts cut", _header()[:16], "truncated GGUF: the tensor and key counts needs bytes 16..24 but the file ends at byte 16"),
    ("key cut", _header(n_kv=1) + struct.pack("<Q", 20) + b"general.arch",
     "truncated GGUF: metadata entry 1 of 1 needs bytes 32..52 but the file ends at byte 44"),
    ("value type cut", _header(n_kv=1) + gstr("general.architecture") + b"\x08\0",
     "truncated GGUF: metadata entry 1 of 1 needs bytes 52..56 but the file ends at byte 54"),
    ("value cut", _header(n_kv=1) + gstr("general.architecture") + struct.pack("<IQ", 8, 5) + b"lla",
     "truncated GGUF: metadata entry 1 of 1 needs bytes 64..69 but the file ends at byte 67"),
    ("second entry cut", _header(n_kv=2) + kv_u32("a", 1) + gstr("bbbbbbbb") + b"\x04\0",
     "truncated GGUF: metadata entry 2 of 2 needs bytes 57..61 but the file ends at byte 59"),
    ("key of 2^62 bytes", _header(n_kv=1) + struct.pack("<Q", BIG) + b"\0" * 32,
     "implausible GGUF: the key of metadata entry 1 of 1 is 4611686018427387904 bytes long (the limit is 65536)"),
    ("string value of 2^62 bytes", _header(n_kv=1) + gstr("x") + struct.pack("<IQ", 8, BIG) + b"\0" * 32,
     "implausible GGUF: the value of 'x' is 4611686018427387904 bytes long (the limit is 67108864)"),
    ("array of 2^62 items", _header(n_kv=1) + gstr("x") + struct.pack("<IIQ", 9, 4, BIG) + b"\0" * 32,
     "implausible GGUF: array 'x' has 4611686018427387904 items (the limit is 67108864)"),
    ("string array of 2^62 items", _header(n_kv=1) + gstr("x") + struct.pack("<IIQ", 9, 8, BIG) + b"\0" * 32,
     "implausible GGUF: array 'x' has 4611686018427387904 items (the limit is 67108864)"),
    ("array item string of 2^62 bytes",
     _header(n_kv=1) + gstr("x") + struct.pack("<IIQQ", 9, 8, 1, BIG) + b"\0" * 32,
     "implausible GGUF: an item of array 'x' is 4611686018427387904 bytes long (the limit is 67108864)"),
    ("key count 2^62", _header(n_kv=BIG) + b"\0" * 64,
     "implausible GGUF: header says 4611686018427387904 metadata keys (the limit is 65536)"),
    ("tensor count 2^62", _header(n_tensors=BIG) + b"\0" * 64,
     "implausible GGUF: header says 4611686018427387904 tensors (the limit is 1048576)"),
    ("tensor count past the file", _header(n_tensors=1000) + b"\0" * 64,
     "truncated GGUF: header says 1000 tensors but the file ends at byte 88"),
    ("tensor name of 2^62 bytes", _header(n_tensors=1) + struct.pack("<Q", BIG) + b"\0" * 64,
     "implausible GGUF: a tensor name is 4611686018427387904 bytes long (the limit is 63)"),
    ("alignment 0", raw_gguf([kv_u32("general.alignment", 0)]),
     "invalid GGUF: general.alignment must be a power of two, got 0"),
    ("alignment 3", raw_gguf([kv_u32("general.alignment", 3)]),
     "invalid GGUF: general.alignment must be a power of two, got 3"),
    ("alignment 48", raw_gguf([kv_u32("general.alignment", 48)]),
     "invalid GGUF: general.alignment must be a power of two, got 48"),
    ("alignment a string", raw_gguf([ggufs.kv_str("general.alignment", "32")]),
     "invalid GGUF: general.alignment must be a power of two, got '32'"),
    ("tensor data past the end", raw_gguf([], [_f32("t", 1024)], b"\0" * 64),
     "truncated GGUF: tensor 't' data ends at byte 4160 but the file ends at byte 128"),
    ("tensor offset 2^62", raw_gguf([], [_f32("t", 8, BIG)], b"\0" * 64),
     "truncated GGUF: tensor 't' data ends at byte 4611686018427388000 but the file ends at byte 128"),
    ("tensor of 2^62 elements", raw_gguf([], [tensor_info("t", (2**31, 2**31, 2**31))], b"\0" * 64),
     "implausible GGUF: tensor 't' has shape [2147483648, 2147483648, 2147483648], over 2**62 elements"),
    ("five dimensions", raw_gguf([], [tensor_info("t", (1, 1, 1, 1, 1))]),
     "invalid GGUF: tensor 't' has 5 dimensions (at most 4)"),
    ("2^32-1 dimensions", raw_gguf([], [gstr("t") + struct.pack("<I", 2**32 - 1)]),
     "invalid GGUF: tensor 't' has 4294967295 dimensions (at most 4)"),
    ("misaligned offset", raw_gguf([], [_f32("t", 8, 17)], b"\0" * 64),
     "invalid GGUF: tensor 't' data offset 17 is not a multiple of the alignment 32"),
    ("overlapping tensors", raw_gguf([], [_f32("a", 16), _f32("b", 8, 32)], b"\0" * 96),
     "invalid GGUF: tensor 'b' overlaps the data of tensor 'a'"),
    ("unknown value type", raw_gguf([kv("x", 2**31, b"\0" * 8)]),
     "invalid GGUF: metadata key 'x' has unknown value type 2147483648"),
]
IDS = [c[0] for c in CASES]


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, message", [c[1:] for c in CASES], ids=IDS)
def test_the_header_check_refuses(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(GGUFError) as caught:
        check_gguf(_write(tmp_path, data))
    assert caught.value.message == message
    assert str(tmp_path) not in caught.value.message + (caught.value.hint or "")


@pytest.mark.parametrize("data, message", [c[1:] for c in CASES], ids=IDS)
def test_the_compiler_refuses(tmp_path: Path, data: bytes, message: str) -> None:
    # read_model_info is what the compiler calls on a FROM file; it runs the check first.
    with pytest.raises(GGUFError) as caught:
        read_model_info(_write(tmp_path, data))
    assert caught.value.message == message


@pytest.mark.parametrize("data, message", [c[1:] for c in CASES], ids=IDS)
def test_create_over_http_refuses(fake, data: bytes, message: str) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    upload = fake.client.post(f"/api/blobs/{digest}", content=data)
    assert upload.status_code in (200, 201), upload.text
    r = fake.client.post("/api/create", json={"model": "hostile", "files": {"model.gguf": digest}, "stream": False})
    body = assert_refused(fake, r, 400)
    assert message in body["error"]
    started = time.monotonic()
    assert fake.client.get("/api/version", timeout=1).status_code == 200
    assert time.monotonic() - started < 1
    assert "hostile:latest" not in [m["name"] for m in fake.client.get("/api/tags").json()["models"]]


# --- Fuzzing: random mutations of a valid tiny file ---------------------------------------------

# The check's own caps bound what it may hold: strings up to 64 MiB would be allowed, but a
# mutated tiny file cannot back one, so what is read stays within a few times the file's size.
MEMORY_LIMIT = 32 * 2**20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> bytes:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf").read_bytes()


MUTATIONS = st.lists(
    st.tuples(st.one_of(st.integers(0, 64), st.integers(0, 8160)),
              st.one_of(st.binary(min_size=1, max_size=8),
                        st.sampled_from([struct.pack("<Q", BIG), struct.pack("<Q", 2**64 - 1),
                                         struct.pack("<I", 2**31), b"\xff" * 8, b"\0" * 8]))),
    min_size=1, max_size=6)


@given(mutations=MUTATIONS, cut=st.one_of(st.none(), st.integers(0, 9000)))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutations_raise_only_gguf_error_within_bounded_memory(tiny: bytes, tmp_path: Path, mutations, cut) -> None:
    data = bytearray(tiny)
    for offset, raw in mutations:
        data[offset : offset + len(raw)] = raw
    path = _write(tmp_path, bytes(data if cut is None else data[:cut]))
    tracemalloc.start()
    try:
        read_model_info(path)
    except GGUFError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT
