"""Turn the bytes of a definition file into the text the grammar reads."""

from __future__ import annotations

import codecs
import unicodedata

from corral.dsl.errors import DefinitionError, Diagnostic
from corral.dsl.span import Span

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode(data: bytes, path: str) -> str:
    """Decode by BOM (UTF-8 without one), as Ollama does; an invalid byte is an error at its line."""
    encoding = "utf-8"
    for bom, name in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom):], name
            break
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        good = data[: e.start].decode(encoding, errors="replace")
        span = Span.at(path, good, len(good))
        raise DefinitionError([Diagnostic(
            f"invalid {encoding.upper()} byte 0x{data[e.start]:02x}", span,
            hint="save the file as UTF-8 (or UTF-16 with a byte order mark)",
        )]) from None


def normalize(text: str) -> str:
    """LF line ends, no BOM, and no control characters but tab and newline (Ollama drops them)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) != "Cc")
