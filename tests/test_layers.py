"""The layers point one way: a package imports only from the packages below it.

The order is pyproject.toml's package list (errors at the bottom, cli at the top); a lazy import
inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SETUP = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
# Top-level packages in layer order; a subpackage (corral.compiler.gguf) belongs to its parent's layer.
LAYERS = [name.split(".")[1] for name in _SETUP["packages"] if name.count(".") == 1]
FOLDERS = {name.split(".")[1]: REPO / folder for name, folder in _SETUP["package-dir"].items()
           if name.count(".") == 1}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module name) for every absolute import in the module, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def corral_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) for every `corral.X` the module imports, lazily or not."""
    return [(line, name.split(".")[1]) for line, name in imported_modules(path)
            if name.startswith("corral.") and name.count(".") >= 1]


MODULES = [(layer, path) for layer in LAYERS for path in sorted(FOLDERS[layer].rglob("*.py"))]


def test_every_layer_is_a_folder_of_modules():
    assert LAYERS[0] == "errors" and LAYERS[-1] == "cli"
    assert {layer for layer, _ in MODULES} == set(LAYERS)


@pytest.mark.parametrize("layer, path", MODULES, ids=[p.relative_to(REPO).as_posix() for _, p in MODULES])
def test_imports_point_down(layer: str, path: Path):
    upward = [f"{path.relative_to(REPO)}:{line}: corral.{target}"
              for line, target in corral_imports(path)
              if target in LAYERS and LAYERS.index(target) > LAYERS.index(layer)]
    assert upward == [], f"corral.{layer} may import only from {LAYERS[:LAYERS.index(layer) + 1]}"
