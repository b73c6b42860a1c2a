"""A bounded walk over a GGUF header that trusts no length in the file.

llama.cpp and the `gguf` package both believe the counts and lengths a header declares: a file
that says it holds 2**60 tensors or a 2**62-byte string sends them into huge allocations, crashes
or minutes of work. So before anything else opens a file, Corral walks the header with its own
struct reads and checks every number against a sane cap *and* against the bytes that are really
there. The walk never touches tensor data, so it costs milliseconds even for a 70 GB file (the one
slow part is stepping over the tokenizer's string arrays: ~60 ms for a 262k-token vocabulary).

The walk also keeps what it read (scalar metadata, short arrays, tensor infos), so `gguf_info`
builds a ModelInfo from it without parsing the header a second time.

Problems raise `GGUFError` with one of four openings, so a reader knows at once what kind of
problem it is: "not a GGUF file", "truncated GGUF", "implausible GGUF" (a count past our caps),
"invalid GGUF" (a value GGUF or llama.cpp forbids). An unreadable path raises `WeightsError`.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from corral.compiler.errors import GGUFError, WeightsError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Caps far above any real model, far below what would hurt. Real files: ~300-2000 tensors,
# ~50 keys, chat templates of a few KB (the largest seen are ~100 KB), vocabularies up to ~260k.
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 16
MAX_KEY_BYTES = 1 << 16  # the GGUF spec limits keys to 65535 bytes
MAX_STRING_BYTES = 1 << 26
MAX_ARRAY_ITEMS = 1 << 26
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME is 64 including the terminating NUL
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ELEMENTS = 1 << 62  # llama.cpp keeps element counts in int64
DECODED_ARRAY_ITEMS = 4096  # arrays up to this length are decoded (per-layer hyperparameters)
DECODED_STRING_ITEMS = 64  # string arrays up to this length are decoded (tags, languages)

# The smallest possible header entries, used to reject counts the file size cannot hold.
MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, one-byte value
MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims=0, type, offset

# GGUF value type -> (name, struct format); STRING (8) and ARRAY (9) are handled by hand.
SCALAR_TYPES: dict[int, tuple[str, str]] = {
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
STRING, ARRAY = 8, 9
TYPE_NAMES = {**{k: v[0] for k, v in SCALAR_TYPES.items()}, STRING: "string", ARRAY: "array"}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

Scalar = Union[int, float, bool, str]


@dataclass(frozen=True, slots=True)
class ArrayValue:
    """An array in the metadata: where it lies, and its items when it is short."""

    item_type: str
    length: int
    offset: int  # file offset of the first item
    items: tuple[Scalar, ...] | None  # None for long arrays (tokenizer vocabularies)


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor info record, already checked against the file."""

    name: str
    ggml_type: int
    type_name: str
    shape: tuple[int, ...]  # GGUF order: shape[0] is the row length (ne0)
    n_elements: int
    n_bytes: int
    offset: int  # absolute file offset of the data


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """Everything the header says, after the bounded check."""

    path: str
    file_size: int
    version: int
    alignment: int
    data_offset: int
    metadata: dict[str, Scalar | ArrayValue]
    tensors: tuple[TensorEntry, ...]


class _Truncated(Exception):
    """Internal: a read ran past the end of the file."""

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end


class _Cursor:
    """Sequential little-endian reads over a buffer; every read checks the file's end."""

    def __init__(self, buf: mmap.mmap | bytes, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, n: int) -> int:
        start = self.pos
        if n > self.size - start:
            raise _Truncated(start, start + n)
        self.pos = start + n
        return start

    def u32(self) -> int:
        return _U32.unpack_from(self.buf, self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.buf, self.take(8))[0]

    def scalar(self, vtype: int) -> Scalar:
        fmt = SCALAR_TYPES[vtype][1]
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt)))[0]

    def raw_string(self, limit: int, what: str) -> bytes:
        length = self.u64()
        if length > limit:
            raise _fail("implausible", f"{what} is {length} bytes long (the limit is {limit})")
        start = self.take(length)
        return bytes(self.buf[start : start + length])


def _fail(kind: str, detail: str, hint: str | None = None) -> GGUFError:
    default_hints = {
        "truncated": "the file is incomplete; download or copy it again",
        "implausible": "the file is corrupt or was not written by a GGUF writer",
        "invalid": "the file is corrupt, or was written by a tool llama.cpp cannot read",
    }
    return GGUFError(f"{kind} GGUF: {detail}", hint=hint or default_hints.get(kind))


def check_gguf(path: str | Path) -> GGUFHeader:
    """Check that `path` holds a well-formed GGUF header and return what it says.

    Raises GGUFError for any malformed header, WeightsError when the file cannot be read.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            if size < 4:
                head = f.read(4)
                raise GGUFError(
                    f"not a GGUF file: only {size} bytes long ({head!r})",
                    hint="the file is empty or cut short; download or copy it again",
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _walk(str(path), buf, size)
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e.strerror or e}") from e


def _walk(path: str, buf: mmap.mmap, size: int) -> GGUFHeader:
    magic = bytes(buf[:4])
    if magic != MAGIC:
        raise GGUFError(f"not a GGUF file: bad magic {magic!r} (expected {MAGIC!r})", hint=_magic_hint(buf))
    cur = _Cursor(buf, size)
    cur.pos = 4
    where = "the header"
    try:
        version = cur.u32()
        _check_version(version)
        where = "the tensor and key counts"
        n_tensors, n_kv = cur.u64(), cur.u64()
        _check_counts(n_tensors, n_kv, cur.pos, size)
        metadata: dict[str, Scalar | ArrayValue] = {}
        for i in range(n_kv):
            where = f"metadata entry {i + 1} of {n_kv}"
            key, value = _read_kv(cur, where)
            if key in metadata:
                raise _fail("invalid", f"metadata key '{key}' appears twice")
            metadata[key] = value
        alignment = _alignment(metadata)
        infos = []
        for i in range(n_tensors):
            where = f"tensor info {i + 1} of {n_tensors}"
            infos.append(_read_tensor_info(cur))
    except _Truncated as t:
        raise _fail("truncated", f"{where} needs bytes {t.start}..{t.end} but the file ends at byte {size}")
    data_offset = -(-cur.pos // alignment) * alignment
    tensors = _place_tensors(infos, data_offset, alignment, size)
    return GGUFHeader(path, size, version, alignment, data_offset, metadata, tensors)


def _check_version(version: int) -> None:
    if version in SUPPORTED_VERSIONS:
        return
    if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
        raise _fail("invalid", "the file is big-endian", hint="llama.cpp on this machine reads little-endian GGUF only")
    if version == 1:
        raise _fail("invalid", "version 1 is no longer readable", hint="re-convert the model with a current llama.cpp")
    raise _fail("invalid", f"unknown version {version} (expected 2 or 3)")


def _check_counts(n_tensors: int, n_kv: int, pos: int, size: int) -> None:
    if n_tensors > MAX_TENSORS:
        raise _fail("implausible", f"header says {n_tensors} tensors (the limit is {MAX_TENSORS})")
    if n_kv > MAX_KV:
        raise _fail("implausible", f"header says {n_kv} metadata keys (the limit is {MAX_KV})")
    if pos + n_tensors * MIN_TENSOR_INFO_BYTES > size:
        raise _fail("truncated", f"header says {n_tensors} tensors but the file ends at byte {size}")
    if pos + n_tensors * MIN_TENSOR_INFO_BYTES + n_kv * MIN_KV_BYTES > size:
        raise _fail(
            "truncated", f"header says {n_tensors} tensors and {n_kv} metadata keys but the file ends at byte {size}"
        )


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("invalid", f"{what} is not valid UTF-8: {raw[:40]!r}") from None


def _read_kv(cur: _Cursor, where: str) -> tuple[str, Scalar | ArrayValue]:
    key = _decode(cur.raw_string(MAX_KEY_BYTES, f"the key of {where}"), f"the key of {where}")
    vtype = cur.u32()
    what = f"the value of '{key}'"
    if vtype == STRING:
        return key, cur.raw_string(MAX_STRING_BYTES, what).decode("utf-8", errors="replace")
    if vtype in SCALAR_TYPES:
        return key, cur.scalar(vtype)
    if vtype != ARRAY:
        raise _fail("invalid", f"metadata key '{key}' has unknown value type {vtype}")
    return key, _read_array(cur, key)


def _read_array(cur: _Cursor, key: str) -> ArrayValue:
    item_type, length = cur.u32(), cur.u64()
    if item_type == ARRAY:
        raise _fail("invalid", f"metadata key '{key}' is an array of arrays, which llama.cpp cannot read")
    if item_type not in TYPE_NAMES:
        raise _fail("invalid", f"array '{key}' has unknown item type {item_type}")
    if length > MAX_ARRAY_ITEMS:
        raise _fail("implausible", f"array '{key}' has {length} items (the limit is {MAX_ARRAY_ITEMS})")
    start = cur.pos
    if item_type == STRING:
        min_item = 8
    else:
        min_item = struct.calcsize(SCALAR_TYPES[item_type][1])
    if length * min_item > cur.size - start:
        raise _fail("truncated", f"array '{key}' says {length} items but the file ends at byte {cur.size}")
    if item_type != STRING:
        cur.take(length * min_item)
        items = None
        if length <= DECODED_ARRAY_ITEMS:
            fmt = "<" + SCALAR_TYPES[item_type][1][1] * length
            items = struct.unpack_from(fmt, cur.buf, start)
        return ArrayValue(TYPE_NAMES[item_type], length, start, items)
    if length <= DECODED_STRING_ITEMS:
        what = f"an item of array '{key}'"
        items = tuple(cur.raw_string(MAX_STRING_BYTES, what).decode("utf-8", errors="replace") for _ in range(length))
        return ArrayValue("string", length, start, items)
    _skip_strings(cur, length, key)
    return ArrayValue("string", length, start, None)


def _skip_strings(cur: _Cursor, count: int, key: str) -> None:
    """Step over `count` strings without copying them: the hot loop of the whole check."""
    buf, size, pos, unpack = cur.buf, cur.size, cur.pos, _U64.unpack_from
    for i in range(count):
        if pos + 8 > size:
            raise _Truncated(pos, pos + 8)
        (length,) = unpack(buf, pos)
        if length > MAX_STRING_BYTES:
            limit = MAX_STRING_BYTES
            raise _fail("implausible", f"item {i} of array '{key}' is {length} bytes long (the limit is {limit})")
        pos += 8 + length
        if pos > size:
            raise _Truncated(pos - length, pos)
    cur.pos = pos


def _alignment(metadata: dict[str, Scalar | ArrayValue]) -> int:
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise _fail("invalid", f"general.alignment must be a power of two, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class _RawInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


def _read_tensor_info(cur: _Cursor) -> _RawInfo:
    name = _decode(cur.raw_string(MAX_TENSOR_NAME_BYTES, "a tensor name"), "a tensor name")
    n_dims = cur.u32()
    if n_dims > MAX_DIMS:
        raise _fail("invalid", f"tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS})")
    shape = tuple(cur.u64() for _ in range(n_dims))
    return _RawInfo(name, shape, cur.u32(), cur.u64())


def _place_tensors(infos: list[_RawInfo], data_offset: int, alignment: int, size: int) -> tuple[TensorEntry, ...]:
    """Check each tensor's shape, type and data range; data ranges must not overlap."""
    entries: list[TensorEntry] = []
    names: set[str] = set()
    for info in infos:
        if info.name in names:
            raise _fail("invalid", f"tensor '{info.name}' appears twice")
        names.add(info.name)
        entries.append(_entry(info, data_offset, alignment, size))
    previous: TensorEntry | None = None
    for entry in sorted(entries, key=lambda e: e.offset):
        if previous is not None and entry.offset < previous.offset + previous.n_bytes:
            raise _fail("invalid", f"tensor '{entry.name}' overlaps the data of tensor '{previous.name}'")
        previous = entry
    return tuple(entries)


def _entry(info: _RawInfo, data_offset: int, alignment: int, size: int) -> TensorEntry:
    name = info.name
    if any(d == 0 for d in info.shape):
        raise _fail("invalid", f"tensor '{name}' has a zero dimension {list(info.shape)}")
    n_elements = 1
    for d in info.shape:
        n_elements *= d
        if n_elements > MAX_ELEMENTS:
            raise _fail("implausible", f"tensor '{name}' has shape {list(info.shape)}, over 2**62 elements")
    try:
        qtype = GGMLQuantizationType(info.ggml_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise _fail("invalid", f"tensor '{name}' has unknown type {info.ggml_type}") from None
    row = info.shape[0] if info.shape else 1
    if row % block:
        raise _fail("invalid", f"tensor '{name}' rows of {row} are not whole {qtype.name} blocks of {block}")
    if info.offset % alignment:
        detail = f"data offset {info.offset} is not a multiple of the alignment {alignment}"
        raise _fail("invalid", f"tensor '{name}' {detail}")
    n_bytes = n_elements // block * type_size
    start = data_offset + info.offset
    if start + n_bytes > size:
        detail = f"data ends at byte {start + n_bytes} but the file ends at byte {size}"
        raise _fail("truncated", f"tensor '{name}' {detail}")
    return TensorEntry(name, info.ggml_type, qtype.name, info.shape, n_elements, n_bytes, start)


def read_array_strings(path: str | Path, array: ArrayValue, indices: set[int]) -> dict[int, str]:
    """The items at `indices` of a string array that check_gguf already validated.

    Long string arrays are not kept in memory; this walks to the wanted items (bos/eos texts).
    """
    wanted = {i for i in indices if 0 <= i < array.length}
    if array.item_type != "string" or not wanted:
        return {}
    found: dict[int, str] = {}
    path = Path(path)
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf, len(buf))
            cur.pos = array.offset
            for i in range(max(wanted) + 1):
                raw = cur.raw_string(MAX_STRING_BYTES, f"item {i} of a string array")
                if i in wanted:
                    found[i] = raw.decode("utf-8", errors="replace")
    except _Truncated as t:
        raise _fail("truncated", f"string array item needs bytes {t.start}..{t.end} but the file ends") from None
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e.strerror or e}") from e
    return found


def read_array_items(path: str | Path, array: ArrayValue) -> tuple[Scalar, ...]:
    """Every item of an array that check_gguf already validated (`/api/show` with `verbose`).

    Short arrays are already decoded; long ones are read again from the file, which the check
    proved holds them, so no count here is trusted beyond what it checked."""
    if array.items is not None:
        return array.items
    path = Path(path)
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if array.item_type != "string":
                vtype = next(t for t, (name, _) in SCALAR_TYPES.items() if name == array.item_type)
                fmt = "<" + SCALAR_TYPES[vtype][1][1] * array.length
                return struct.unpack_from(fmt, buf, array.offset)
            cur = _Cursor(buf, len(buf))
            cur.pos = array.offset
            return tuple(cur.raw_string(MAX_STRING_BYTES, "an item of a string array").decode("utf-8", errors="replace")
                         for _ in range(array.length))
    except (_Truncated, struct.error):
        raise _fail("truncated", "an array ends past the end of the file") from None
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path.name}: {e.strerror or e}") from e


def _magic_hint(buf: mmap.mmap) -> str:
    """Name the format the file really is, when its first bytes give it away."""
    head = bytes(buf[:64])
    if head.startswith(b"PK\x03\x04"):
        return "this is a ZIP archive (a PyTorch checkpoint?); convert it to GGUF with llama.cpp's convert_hf_to_gguf.py"
    if head.startswith(b"version https://git-lfs"):
        return "this is a Git LFS pointer, not the weights; run `git lfs pull` to fetch the file"
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg"):
        return "this is an old GGML/GGJT file; re-convert it to GGUF with a current llama.cpp"
    if head.lstrip()[:1] == b"<":
        return "this looks like an HTML or XML page (a failed download?)"
    if len(head) > 9 and head[8:9] == b"{" and _U64.unpack_from(head)[0] < (1 << 30):
        return "this looks like a safetensors file; convert it to GGUF with llama.cpp's convert_hf_to_gguf.py"
    return "Corral loads GGUF files (the format of llama.cpp); check the path"
