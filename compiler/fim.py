"""Fill-in-the-middle: a model's FIM tokens and the prompt made of them (`suffix` on a completion).

The tokens come from the GGUF: the ids under llama.cpp's keys (tokenizer.ggml.fim_pre/suf/mid,
or the older prefix/suffix/middle), else tokens named as the common FIM families name them. The
prompt is in prefix-suffix-middle order, as llama.cpp's infill builds it: the model writes the
middle after the last token.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from corral.compiler.capabilities import FIM_KEYS
from corral.compiler.gguf.check import ArrayValue, check_gguf, read_array_items

# Token names of the FIM families, (prefix, suffix, middle): Qwen, StarCoder/SmolLM, Code Llama,
# DeepSeek Coder (its begin/hole/end play the same parts).
FIM_NAMES = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),
    ("<PRE>", "<SUF>", "<MID>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
)


@dataclass(frozen=True)
class FimTokens:
    prefix: str
    suffix: str
    middle: str

    def prompt(self, before: str, after: str) -> str:
        """The prompt that asks for what goes between `before` and `after`."""
        return f"{self.prefix}{before}{self.suffix}{after}{self.middle}"


def fim_from_vocabulary(metadata: dict, tokens: tuple[object, ...]) -> FimTokens | None:
    """The FIM tokens named by the metadata's ids, else found by name in `tokens`; None without."""
    for keys in FIM_KEYS:
        ids = [metadata.get(k) for k in keys]
        if all(isinstance(i, int) and 0 <= i < len(tokens) for i in ids):
            return FimTokens(*(str(tokens[i]) for i in ids))  # type: ignore[index]
    present = set(tokens)
    for names in FIM_NAMES:
        if all(n in present for n in names):
            return FimTokens(*names)
    return None


@lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int | None) -> FimTokens | None:
    header = check_gguf(Path(path))
    array = header.metadata.get("tokenizer.ggml.tokens")
    tokens = read_array_items(path, array) if isinstance(array, ArrayValue) else ()
    return fim_from_vocabulary(dict(header.metadata), tuple(tokens))


def fim_tokens(path: str, size: int, mtime_ns: int | None = None) -> FimTokens | None:
    """The FIM tokens of the GGUF at `path` (read once per file version)."""
    return _cached(path, size, mtime_ns)
