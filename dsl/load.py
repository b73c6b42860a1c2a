"""Read a definition file of either syntax (chosen by its name) into the IR."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from corral.dsl.build import Parsed
from corral.dsl.decode import decode
from corral.dsl.errors import DefinitionError, Diagnostic
from corral.dsl.modelfile import parse_modelfile
from corral.dsl.span import Span
from corral.dsl.toml_form import parse_toml

Syntax = Literal["modelfile", "toml"]


def syntax_of(path: str | Path) -> Syntax:
    """`*.toml` is the TOML form; anything else (Modelfile, *.Modelfile, ...) is a Modelfile."""
    return "toml" if str(path).lower().endswith(".toml") else "modelfile"


def parse_text(text: str, path: str = "<string>", syntax: Syntax = "modelfile") -> Parsed:
    """Parse definition text of the given syntax."""
    return parse_toml(text, path) if syntax == "toml" else parse_modelfile(text, path)


def load(path: str | Path) -> Parsed:
    """Read and parse a definition file; every problem is a DefinitionError with a position."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DefinitionError([Diagnostic(f"cannot read {name}: {e.strerror or e}", Span(name, 1, 1))]) from None
    syntax = syntax_of(path)
    if syntax == "toml":
        text = decode(data, name)
        return parse_toml(text, name)
    return parse_modelfile(decode(data, name), name)
