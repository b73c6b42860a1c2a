"""A thin typed layer over llama.cpp's C API, through llama_cpp's ctypes bindings.

Only the worker process uses this module: it owns one model, one generation context with a
sequence slot per parallel request, and (on first use) an embeddings context on the same weights.
Nothing here is thread-safe, and nothing needs to be: the worker's step loop is the only caller.

The high-level `llama_cpp.Llama` is not used: its context always has a single sequence (§5 of the
llama-cpp-python reference), it drops long token pieces, and its `verbose=False` redirects the
whole process's stderr. llama.cpp's own logging goes to our logger instead, WARNING and above.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import llama_cpp

from corral.compiler.spec import LoadOptions
from corral.engine.errors import ModelLoadError

log = logging.getLogger(__name__)

# ggml's log levels in this llama.cpp (llama_cpp/_logger.py still lists an older numbering).
_GGML_WARN, _GGML_ERROR, _GGML_CONT = 3, 4, 5
_recent_errors: collections.deque[str] = collections.deque(maxlen=8)
_last_level = [0]  # the level a CONT(inuation) fragment inherits


@llama_cpp.llama_log_callback
def _on_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # A module-level function: llama.cpp keeps the raw pointer, so the ctypes object must live
    # as long as the process.
    if level == _GGML_CONT:
        level = _last_level[0]
    _last_level[0] = level
    if level < _GGML_WARN:
        return
    message = text.decode("utf-8", errors="replace").strip()
    if not message:
        return
    if level < _GGML_ERROR and "n_ctx_seq (" in message and "> n_ctx_train" in message:
        # The unified pool lets any sequence address every cell, so llama.cpp sees n_ctx_seq as the
        # whole pool; the engine itself stops each sequence at its num_ctx, within training.
        return
    if level >= _GGML_ERROR:
        _recent_errors.append(message)
        log.error("llama.cpp: %s", message)
    else:
        log.warning("llama.cpp: %s", message)


@functools.cache
def init_backend() -> None:
    """Initialise llama.cpp once per process and route its logging to ours."""
    llama_cpp.llama_log_set(_on_llama_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def default_threads() -> int:
    """CPU cores this process may run on (cgroup-pinned affinity included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes straight to file descriptor 2 (not through the logger).

    llama.cpp's grammar parser explains its errors only with fprintf(stderr). Swapping fd 2 is
    process-wide, which is safe only because the worker calls llama.cpp from a single thread.
    """
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", errors="replace"))


def take_errors() -> list[str]:
    """llama.cpp's error lines since the last call (oldest first)."""
    errors = list(_recent_errors)
    _recent_errors.clear()
    return errors


def _llama_reason(default: str) -> str:
    """llama.cpp's last error lines, which say why a load failed."""
    reasons = [r for r in _recent_errors if "failed to load model" not in r] or list(_recent_errors)
    _recent_errors.clear()
    return "; ".join(reasons[-2:]) or default


class Model:
    """Loaded weights and their vocabulary."""

    def __init__(self, path: str | Sequence[str], options: LoadOptions, *, extra_buffers: bool = True) -> None:
        """Load `path` with the GPU split of `options`; a list of paths is a split GGUF's shards, in order.

        `extra_buffers=False` turns off llama.cpp's repacked CPU weight layouts (AMX and friends),
        which crash inside some virtual machines that advertise AMX (see engine.py).
        """
        init_backend()
        paths = [path] if isinstance(path, str) else list(path)
        for each in paths:
            if not Path(each).is_file():
                raise ModelLoadError(f"model file {each} does not exist")
        path = paths[0]
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = options.n_gpu_layers
        if options.main_gpu is not None:
            params.main_gpu = options.main_gpu
        if options.tensor_split:
            values = list(options.tensor_split)[: llama_cpp.LLAMA_MAX_DEVICES]
            values += [0.0] * (llama_cpp.LLAMA_MAX_DEVICES - len(values))
            # llama.cpp keeps the pointer during loading only, but keeping it costs nothing.
            self._tensor_split = (ctypes.c_float * llama_cpp.LLAMA_MAX_DEVICES)(*values)
            params.tensor_split = self._tensor_split
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if options.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        params.use_extra_bufts = extra_buffers
        _recent_errors.clear()
        if len(paths) == 1:
            handle = llama_cpp.llama_model_load_from_file(path.encode(), params)
        else:
            # Explicit paths: llama_model_load_from_file would look for the other shards by
            # llama.cpp's file names, which the store's blobs (sha256-<hex>) do not have.
            shards = (ctypes.c_char_p * len(paths))(*(p.encode() for p in paths))
            handle = llama_cpp.llama_model_load_from_splits(shards, len(paths), params)
        if not handle:
            what = path if len(paths) == 1 else f"the {len(paths)} shards of {path}"
            raise ModelLoadError(f"llama.cpp could not load {what}: {_llama_reason('no reason given')}")
        self.handle = handle
        self.path = path
        self.vocab = llama_cpp.llama_model_get_vocab(handle)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_embd: int = llama_cpp.llama_model_n_embd(handle)
        self.n_ctx_train: int = llama_cpp.llama_model_n_ctx_train(handle)
        self.add_bos: bool = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos: int = llama_cpp.llama_vocab_bos(self.vocab)
        self._piece = ctypes.create_string_buffer(64)
        self._adapters: list[ctypes.c_void_p] = []

    def meta(self, key: str) -> str | None:
        """A scalar GGUF metadata value as text, or None when the file lacks the key."""
        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self.handle, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    @property
    def declares_pooling(self) -> bool:
        """Whether the GGUF names a pooling type (embedding models do; chat models do not)."""
        arch = self.meta("general.architecture") or ""
        return self.meta(f"{arch}.pooling_type") is not None

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Token ids of `text`; `parse_special` turns control-token text into control tokens."""
        data = text.encode("utf-8")
        size = len(data) + 2
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            size = -n  # the buffer was too small; llama.cpp says how many it needs

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token; control tokens are empty unless `special`."""
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, special)
        if n < 0:  # a long piece (runs of spaces or '='): grow the buffer instead of dropping it
            self._piece = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, special)
        return self._piece.raw[:n]

    @property
    def is_recurrent(self) -> bool:
        """Recurrent or hybrid (Mamba-like) models keep one state per sequence, not cells per token."""
        return bool(llama_cpp.llama_model_is_recurrent(self.handle) or llama_cpp.llama_model_is_hybrid(self.handle))

    def is_eog(self, token: int) -> bool:
        """End of generation: EOS, EOT, <|im_end|> and whatever else the GGUF marks so."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def load_adapters(self, paths: Sequence[str]) -> None:
        """Load LoRA adapters; `Context.apply_adapters` attaches them to a context."""
        for path in paths:
            _recent_errors.clear()
            adapter = llama_cpp.llama_adapter_lora_init(self.handle, path.encode())
            if not adapter:
                raise ModelLoadError(f"llama.cpp could not load the adapter {path}: "
                                     f"{_llama_reason('no reason given')}")
            self._adapters.append(adapter)

    @property
    def adapters(self) -> list[ctypes.c_void_p]:
        return list(self._adapters)

    def close(self) -> None:
        """Free the weights (adapters go with them)."""
        if self.handle:
            llama_cpp.llama_model_free(self.handle)
            self.handle = None
            self._adapters.clear()


class Batch:
    """One reusable llama_batch: allocated once, refilled every step (reallocating leaks)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        # Array views over the C buffers, so a run of tokens is one slice assignment.
        self._token = (llama_cpp.llama_token * capacity).from_address(ctypes.addressof(self.raw.token.contents))
        self._pos = (llama_cpp.llama_pos * capacity).from_address(ctypes.addressof(self.raw.pos.contents))
        self._n_seq = (ctypes.c_int32 * capacity).from_address(ctypes.addressof(self.raw.n_seq_id.contents))
        self._logits = (ctypes.c_int8 * capacity).from_address(ctypes.addressof(self.raw.logits.contents))
        self._n_seq[:] = [1] * capacity
        self.raw.n_tokens = 0

    @property
    def n_tokens(self) -> int:
        return self.raw.n_tokens

    @property
    def room(self) -> int:
        return self.capacity - self.raw.n_tokens

    def clear(self) -> None:
        self.raw.n_tokens = 0

    def add(self, tokens: Sequence[int], pos: int, seq: int, *, output: str = "last") -> int:
        """Append a run of one sequence's tokens from position `pos`; returns the last's index.

        `output` says which tokens produce logits or embeddings: "last", "all" or "none".
        """
        start, n = self.raw.n_tokens, len(tokens)
        if n == 0 or start + n > self.capacity:
            raise ValueError(f"cannot add {n} tokens to a batch holding {start} of {self.capacity}")
        end = start + n
        self._token[start:end] = tokens
        self._pos[start:end] = range(pos, pos + n)
        self._logits[start:end] = [1 if output == "all" else 0] * n
        if output == "last":
            self._logits[end - 1] = 1
        seq_ids = self.raw.seq_id
        for i in range(start, end):
            seq_ids[i][0] = seq
        self.raw.n_tokens = end
        return end - 1

    def close(self) -> None:
        if self.capacity:
            llama_cpp.llama_batch_free(self.raw)
            self.capacity = 0


class Context:
    """A llama_context with `n_seq_max` sequences (slots) over a model."""

    def __init__(self, model: Model, *, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int,
                 unified: bool, embeddings: bool = False, n_ubatch: int | None = None) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch or min(n_batch, 512)
        params.n_seq_max = n_seq_max
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = unified
        params.no_perf = True  # we time per request ourselves; the context's counters are global
        if embeddings:
            params.embeddings = True
            # A chat model has no pooling layer of its own and would return one vector per token.
            if not model.declares_pooling:
                params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        _recent_errors.clear()
        handle = llama_cpp.llama_init_from_model(model.handle, params)
        if not handle:
            raise ModelLoadError(f"llama.cpp could not create a context of {n_ctx} tokens for "
                                 f"{model.path}: {_llama_reason('out of memory?')}")
        self.handle = handle
        self.model = model
        self.memory = llama_cpp.llama_get_memory(handle)
        self.n_ctx: int = llama_cpp.llama_n_ctx(handle)
        self.n_batch: int = llama_cpp.llama_n_batch(handle)
        self.n_seq_max: int = llama_cpp.llama_n_seq_max(handle)
        self.n_embd = model.n_embd

    def decode(self, batch: Batch) -> int:
        """llama_decode's return code: 0 ok, 1 no KV room, 2 aborted, negative: failed."""
        return llama_cpp.llama_decode(self.handle, batch.raw)

    def set_threads(self, n: int) -> None:
        """Threads of the next decodes (single tokens and prompt batches alike)."""
        llama_cpp.llama_set_n_threads(self.handle, n, n)

    @property
    def n_threads(self) -> int:
        return llama_cpp.llama_n_threads(self.handle)

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        """Drop a sequence's KV in [p0, p1); False when a partial removal is impossible."""
        return bool(llama_cpp.llama_memory_seq_rm(self.memory, seq, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Let `dst` see `src`'s KV in [p0, p1); in a unified cache this tags cells, no data moves."""
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, p0, p1)

    def seq_add(self, seq: int, p0: int, p1: int, delta: int) -> None:
        """Move a sequence's KV in [p0, p1) by `delta` positions (a context shift). A cell seen by
        several sequences moves for all of them."""
        llama_cpp.llama_memory_seq_add(self.memory, seq, p0, p1, delta)

    @property
    def can_shift(self) -> bool:
        """Whether positions in the KV can be moved (not for recurrent models, nor some RoPE kinds)."""
        return bool(llama_cpp.llama_memory_can_shift(self.memory))

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def sequence_embedding(self, seq: int) -> list[float]:
        """The pooled embedding of a sequence after an embeddings decode."""
        ptr = llama_cpp.llama_get_embeddings_seq(self.handle, seq)
        if not ptr:
            raise RuntimeError(f"llama.cpp returned no pooled embedding for sequence {seq}")
        return ptr[: self.n_embd]

    def apply_adapters(self, adapters: Sequence[ctypes.c_void_p], scale: float = 1.0) -> None:
        """Attach LoRA adapters to every sequence of this context (there is no per-request LoRA)."""
        if not adapters:
            return
        n = len(adapters)
        array = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*adapters)
        scales = (ctypes.c_float * n)(*([scale] * n))
        if llama_cpp.llama_set_adapters_lora(self.handle, array, n, scales) != 0:
            raise ModelLoadError(f"llama.cpp could not apply the LoRA adapters: {_llama_reason('unknown reason')}")

    def close(self) -> None:
        if self.handle:
            llama_cpp.llama_free(self.handle)
            self.handle = None
