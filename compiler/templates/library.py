"""Ollama's named chat templates, shipped as package data, and how a GGUF's template maps to one.

`ollama/` (beside this module) is a copy of the `template/` folder of the Ollama repository (MIT, see
`LICENSE.ollama` there): NAME.gotmpl (the Go template), NAME.json (its default parameters,
mostly `stop`) and index.json (Hugging Face Jinja templates known to correspond to a
name). `recognise` reproduces Ollama's `template.Named`: the index entry with the smallest
Levenshtein distance to the GGUF's `tokenizer.chat_template` wins, first one on ties, and
only when that distance is below 100.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

_DATA = "ollama"
MATCH_BELOW = 100  # Ollama accepts a named template only under this edit distance


def _read(filename: str) -> str:
    return (resources.files("corral.compiler.templates") / _DATA / filename).read_text(encoding="utf-8")


@functools.cache
def _index() -> tuple[tuple[str, str], ...]:
    """(Jinja template, name) pairs in index.json order (order decides ties)."""
    return tuple((entry["template"], entry["name"]) for entry in json.loads(_read("index.json")))


@functools.cache
def library_names() -> tuple[str, ...]:
    """The names of the shipped Ollama templates (every NAME.gotmpl), sorted."""
    folder = resources.files("corral.compiler.templates") / _DATA
    return tuple(sorted(p.name.removesuffix(".gotmpl") for p in folder.iterdir() if p.name.endswith(".gotmpl")))


def _check(name: str) -> None:
    if name not in library_names():
        raise KeyError(f"unknown Ollama template {name!r}; known: {', '.join(library_names())}")


@functools.cache
def library_template(name: str) -> str:
    """The Go template text of a named Ollama template (line endings normalised to \\n, as Ollama does)."""
    _check(name)
    return _read(f"{name}.gotmpl").replace("\r\n", "\n")


@functools.cache
def known_stops(name: str) -> tuple[str, ...]:
    """The `stop` parameters Ollama adds along with the named template (KeyError if unknown)."""
    _check(name)
    try:
        params = json.loads(_read(f"{name}.json"))
    except FileNotFoundError:
        return ()  # Ollama tolerates a template without a parameter file
    return tuple(params.get("stop") or ())


def levenshtein(a: str, b: str) -> int:
    """Edit distance between two strings, counted in code points like Go's agnivade/levenshtein.

    Bit-parallel (Myers/Hyyrö) over Python integers: one pass over the longer string with
    a handful of big-integer operations per character, fast enough for chat templates of
    several kilobytes.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    masks: dict[str, int] = {}
    for i, ch in enumerate(b):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(b)) - 1
    top = 1 << (len(b) - 1)
    plus, minus, score = full, 0, len(b)
    for ch in a:
        eq = masks.get(ch, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        hp = minus | ~(xh | plus)
        hm = plus & xh
        if hp & top:
            score += 1
        elif hm & top:
            score -= 1
        hp = (hp << 1) | 1
        hm = hm << 1
        plus = (hm | ~(xv | hp)) & full
        minus = hp & xv & full
    return score


def recognise(jinja_text: str) -> str | None:
    """The Ollama template name a Hugging Face Jinja chat template corresponds to, or None."""
    best_name: str | None = None
    best = MATCH_BELOW  # only distances below the threshold can matter
    for known, name in _index():
        if abs(len(known) - len(jinja_text)) >= best:
            continue  # the length difference alone is a lower bound on the distance
        distance = levenshtein(jinja_text, known)
        if distance < best:
            best, best_name = distance, name
    return best_name
