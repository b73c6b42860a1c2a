"""Images through llama.cpp's multimodal library (mtmd), inside the model's worker.

A model with a projector (an mmproj GGUF) gets a `Vision` beside its weights. A request with
images reaches the worker with its prompt rendered by the chat template and one `MEDIA_MARKER`
where each image goes (as llama.cpp's server renders it); `Vision.tokenize` cuts that prompt into
text and image chunks, and `Prepared.evaluate` runs them (the projector encodes each image, and
its embeddings are decoded into the sequence's KV cells) when the sequence is admitted, all but
the last text token: that one goes through the batch loop's ordinary decode, whose logits start
the answer. Requests without images never come here.

An image's cells carry no token id, so the batch loop's token list marks them with negative ids,
distinct per request, which no other prompt can share as a prefix.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
from dataclasses import dataclass
from typing import Sequence

from corral.engine.errors import EngineInputError, ModelLoadError
from corral.engine.llama import Batch, Context, Model, _on_llama_log, take_errors
from corral.engine.requests import MEDIA_MARKER

log = logging.getLogger(__name__)

_CHUNK_TEXT = 0  # MTMD_INPUT_CHUNK_TYPE_TEXT
_ids = itertools.count(1)


@functools.cache
def _mtmd():
    # Imported here, so that loading libmtmd costs nothing in workers that never see an image.
    # mtmd logs each chunk it tokenizes and each image it encodes, on its own logger: route it
    # to llama.cpp's (warnings and errors only), or every image prints a dozen lines to stderr.
    from llama_cpp import mtmd_cpp
    mtmd_cpp.mtmd_log_set(_on_llama_log, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(_on_llama_log, ctypes.c_void_p(0))
    return mtmd_cpp


class Vision:
    """A loaded projector for one model."""

    def __init__(self, path: str, model: Model, *, use_gpu: bool, n_threads: int) -> None:
        mtmd = _mtmd()
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.n_threads = max(n_threads, 1)
        params.media_marker = MEDIA_MARKER.encode()
        take_errors()
        handle = mtmd.mtmd_init_from_file(path.encode(), model.handle, params)
        if not handle:
            reason = "; ".join(take_errors()[-2:]) or "no reason given"
            raise ModelLoadError(f"llama.cpp could not load the projector {path}: {reason}")
        if not mtmd.mtmd_support_vision(handle):
            mtmd.mtmd_free(handle)
            raise ModelLoadError(f"the projector {path} has no vision encoder")
        self.handle = handle
        self.model = model
        # Positions are the batch loop's cell counts; models placing images by 2-D positions
        # (M-RoPE: Qwen2-VL and kin) would need positions the loop does not track.
        self.mrope = bool(mtmd.mtmd_decode_use_mrope(handle))

    def tokenize(self, prompt: str, images: Sequence[bytes], *, add_special: bool) -> "Prepared":
        """The prompt's chunks, one image chunk per MEDIA_MARKER (in order); EngineInputError
        for an image mtmd cannot decode or a marker count that differs from the images."""
        if self.mrope:
            raise EngineInputError("this model's projector places images by 2-D positions (M-RoPE), "
                                   "which Corral does not run yet")
        mtmd = _mtmd()
        bitmaps = []
        try:
            for i, data in enumerate(images):
                buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self.handle, buf, len(data), False)
                if not bitmap:
                    raise EngineInputError(f"image {i + 1} could not be decoded (PNG, JPEG, BMP, GIF and "
                                           "the other formats stb_image reads are supported)")
                bitmaps.append(bitmap)
            chunks = mtmd.mtmd_input_chunks_init()
            text = mtmd.mtmd_input_text()
            encoded = prompt.encode("utf-8")
            text.text, text.text_len = encoded, len(encoded)
            text.add_special, text.parse_special = add_special, True
            array = (mtmd.mtmd_bitmap_p_ctypes * max(len(bitmaps), 1))(*bitmaps)
            rc = mtmd.mtmd_tokenize(self.handle, chunks, ctypes.byref(text), array, len(bitmaps))
            if rc != 0:
                mtmd.mtmd_input_chunks_free(chunks)
                raise EngineInputError(f"the prompt has a different number of image places than images "
                                       f"({len(images)} images)" if rc == 1 else f"image preprocessing failed ({rc})")
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        prepared = Prepared(self, chunks)
        if not prepared.ends_with_text:  # the answer's first token is sampled from a text token's logits
            prepared.close()
            raise EngineInputError("the prompt ends with an image: put some text after the last image")
        return prepared

    def close(self) -> None:
        if self.handle:
            _mtmd().mtmd_free(self.handle)
            self.handle = None


@dataclass
class Prepared:
    """A tokenized multimodal prompt: its token list (images as negative ids) and its chunks."""

    vision: Vision
    chunks: object  # mtmd_input_chunks *, freed by close()

    def __post_init__(self) -> None:
        mtmd = _mtmd()
        tokens: list[int] = []
        self.image_tokens = 0
        self.ends_with_text = False
        for i in range(mtmd.mtmd_input_chunks_size(self.chunks)):
            chunk = mtmd.mtmd_input_chunks_get(self.chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == _CHUNK_TEXT:
                n = ctypes.c_size_t()
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens.extend(ids[: n.value])
                self.ends_with_text = n.value > 0
            else:
                n_pos = mtmd.mtmd_input_chunk_get_n_pos(chunk)
                tokens.extend([-next(_ids)] * n_pos)
                self.image_tokens += n_pos
                self.ends_with_text = False
        self.tokens = tokens

    def evaluate(self, ctx: Context, seq: int) -> int:
        """Decode every chunk into `seq` from position 0, leaving the final text token to the
        caller's batch; returns how many cells were filled. EngineInputError when mtmd fails."""
        mtmd = _mtmd()
        n_chunks = mtmd.mtmd_input_chunks_size(self.chunks)
        n_past = 0
        for i in range(n_chunks):
            chunk = mtmd.mtmd_input_chunks_get(self.chunks, i)
            last = i == n_chunks - 1
            if last and mtmd.mtmd_input_chunk_get_type(chunk) == _CHUNK_TEXT:
                n = ctypes.c_size_t()
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                if n.value > 1:
                    n_past = self._text(ctx, list(ids[: n.value - 1]), n_past, seq)
                break
            new_past = (ctypes.c_int32 * 1)()
            rc = mtmd.mtmd_helper_eval_chunk_single(self.vision.handle, ctx.handle, chunk, n_past, seq,
                                                   ctx.n_batch, False, new_past)
            if rc != 0:
                raise EngineInputError(f"evaluating the prompt's images failed ({rc})")
            n_past = new_past[0]
        return n_past

    def _text(self, ctx: Context, ids: list[int], n_past: int, seq: int) -> int:
        batch = Batch(ctx.n_batch)
        try:
            for start in range(0, len(ids), ctx.n_batch):
                batch.clear()
                part = ids[start: start + ctx.n_batch]
                batch.add(part, n_past, seq, output="none")
                if ctx.decode(batch) != 0:
                    raise EngineInputError("evaluating the prompt's text failed")
                n_past += len(part)
        finally:
            batch.close()
        return n_past

    def close(self) -> None:
        if self.chunks is not None:
            _mtmd().mtmd_input_chunks_free(self.chunks)
            self.chunks = None
