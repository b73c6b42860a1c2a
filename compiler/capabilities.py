"""What a model can do, as `/api/show` and `/api/tags` list it: its capabilities.

Derived from the compiled spec (its template, PARSER, architecture) and the GGUF's metadata, the
way Ollama derives them, so a client that gates a feature on a capability gates it alike:

- `embedding` for an embedding model (a `<arch>.pooling_type` key, or an encoder-only
  architecture such as bert), else `completion`: the two exclude each other, as in Ollama;
- `tools` when the template renders tool definitions;
- `insert` (fill-in-the-middle) when the vocabulary has the FIM tokens, or a Go template uses
  `.Suffix`;
- `vision` when the model has a projector;
- `thinking` when its reasoning is in a format Corral parses (corral.compiler.thinking).
"""

from __future__ import annotations

from typing import Any, Mapping

from corral.compiler.spec import RuntimeSpec
from corral.compiler.thinking import supports_thinking

CAPABILITIES = ("completion", "embedding", "tools", "insert", "vision", "thinking")

# Encoder-only architectures (llama.cpp's names): no causal head, so they embed and never generate.
# A missing output.weight says nothing by itself: tied-embedding models (SmolLM2) lack it too.
EMBEDDING_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert", "t5encoder",
})

# The three token ids a FIM prompt needs, under llama.cpp's current keys and their older names.
FIM_KEYS = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.fim_mid_token_id"),
    ("tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id", "tokenizer.ggml.middle_token_id"),
)


def is_embedding(architecture: str, metadata: Mapping[str, Any]) -> bool:
    """Whether the GGUF is an embedding model rather than a causal language model."""
    return architecture in EMBEDDING_ARCHITECTURES or f"{architecture}.pooling_type" in metadata


def has_fim_tokens(metadata: Mapping[str, Any]) -> bool:
    """Whether the vocabulary names the prefix, suffix and middle tokens of fill-in-the-middle."""
    return any(all(isinstance(metadata.get(k), int) for k in keys) for keys in FIM_KEYS)


def renders_tools(spec: RuntimeSpec) -> bool:
    """Whether the template renders tool definitions (Go: `.Tools`; Jinja: `tools`)."""
    t = spec.template
    return ".Tools" in t.source if t.kind == "go" else "tools" in t.source


def capabilities(spec: RuntimeSpec, metadata: Mapping[str, Any]) -> list[str]:
    """The model's capabilities in Ollama's order; `metadata` is the GGUF's (check_gguf's keys)."""
    embedding = is_embedding(spec.model.architecture, metadata)
    caps = ["embedding" if embedding else "completion"]
    if embedding:
        return caps  # a template on an embedding model is never rendered
    if renders_tools(spec):
        caps.append("tools")
    if has_fim_tokens(metadata) or (spec.template.kind == "go" and ".Suffix" in spec.template.source):
        caps.append("insert")
    if spec.projector is not None:  # a definition's PROJECTOR, or a stored model's projector layer
        caps.append("vision")
    if supports_thinking(spec):
        caps.append("thinking")
    return caps
