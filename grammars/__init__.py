"""Lark grammars shipped as package data."""

from importlib.resources import files


def read(name: str) -> str:
    """Return the text of the grammar file `name` (e.g. "modelfile.lark")."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
