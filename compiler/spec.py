"""RuntimeSpec: everything the runtime needs to run a model, settled at compile time.

Frozen and content-addressed: `digest` changes exactly when something that affects a request
changes, and `load_digest` exactly when the weights must be reloaded (weights, adapters, context,
GPU plan). Hot reload compares the two to decide between a spec swap and a reload.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

from corral.compiler.plan import MemoryPlan
from corral.dsl.parameters import ParamValue


# The thinking formats a definition's PARSER may name (corral.runtime.thinking parses them): the
# `<think>` family (`think`, and the model names that use it) and gpt-oss's `harmony` channels.
THINKING_PARSERS = ("think", "qwen3", "qwen3-thinking", "deepseek-r1", "cogito", "harmony")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WeightsRef(_Frozen):
    """A GGUF file, identified by content digest when known, else by path, size and mtime."""

    path: str
    size: int
    digest: str | None = None  # "sha256:<hex>" for store blobs
    mtime_ns: int | None = None


class ModelSummary(_Frozen):
    """What `show` and the APIs report about the model (from the GGUF header)."""

    architecture: str
    parameter_count: int
    parameter_size: str
    quantization: str
    context_length: int | None
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    vocab_size: int
    bos_token: str | None
    eos_token: str | None


class TemplateSpec(_Frozen):
    """The chat template: as written, and the sandboxed Jinja it runs as."""

    kind: Literal["jinja", "go"]
    source: str
    jinja: str
    name: str | None  # the Ollama template it was recognised as, if any
    origin: Literal["definition", "base", "gguf", "default"]


class ChatMessage(_Frozen):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class LoadOptions(_Frozen):
    """Settings that take effect only when the weights are loaded."""

    num_ctx: int
    num_batch: int
    num_parallel: int
    num_thread: int  # 0: decide at load time
    use_mmap: bool
    n_gpu_layers: int
    main_gpu: int | None
    tensor_split: tuple[float, ...] | None


class RuntimeSpec(_Frozen):
    name: str
    weights: WeightsRef  # the GGUF, or the first shard of a split one (it holds the metadata)
    splits: tuple[WeightsRef, ...] = ()  # a split GGUF's further shards, in order (split.no 1, 2, ...)
    adapters: tuple[WeightsRef, ...]
    model: ModelSummary
    template: TemplateSpec
    system: str | None
    messages: tuple[ChatMessage, ...]
    stop: tuple[str, ...]
    parameters: dict[str, ParamValue]  # as the definition (and its base) set them, in order
    options: dict[str, ParamValue]  # sampling defaults (temperature, top_k, ...), request options override
    load: LoadOptions
    plan: MemoryPlan
    licenses: tuple[str, ...]
    requires: str | None
    source: str | None  # the definition file it was compiled from, if any
    parser: str | None = None  # the definition's PARSER (one of THINKING_PARSERS), if any
    projector: WeightsRef | None = None  # a multimodal projector (mmproj) GGUF: the model sees images
    draft: WeightsRef | None = None  # DRAFT: a smaller model of the same vocabulary, for speculative decoding

    @property
    def weight_files(self) -> tuple[WeightsRef, ...]:
        """Every weights file, in the order llama.cpp loads them."""
        return (self.weights, *self.splits)

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the whole spec (a one-file model's has no `splits`,
        so its digest is what it was before split GGUFs were known)."""
        data = self.model_dump(mode="json")
        if not self.splits:
            del data["splits"]
        if data.get("parser") is None:  # likewise a spec without a PARSER
            data.pop("parser", None)
        if data.get("projector") is None:  # and a model without a projector (nor room for images)
            data.pop("projector", None)
            if not data["plan"].get("vision_bytes"):
                data["plan"].pop("vision_bytes", None)
        if data.get("draft") is None:  # and one without a DRAFT
            data.pop("draft", None)
        if not data["plan"].get("draft_bytes"):
            data["plan"].pop("draft_bytes", None)
        return _digest(data)

    @property
    def load_digest(self) -> str:
        """sha256 of what a running model cannot change without reloading its weights."""
        data = {"weights": self.weights.model_dump(mode="json"),
                "adapters": [a.model_dump(mode="json") for a in self.adapters],
                "load": self.load.model_dump(mode="json")}
        if self.splits:
            data["splits"] = [s.model_dump(mode="json") for s in self.splits]
        if self.projector is not None:
            data["projector"] = self.projector.model_dump(mode="json")
        if self.draft is not None:
            data["draft"] = self.draft.model_dump(mode="json")
        return _digest(data)


def _digest(data: object) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
