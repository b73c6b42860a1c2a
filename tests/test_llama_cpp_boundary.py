"""llama_cpp stays inside the model worker: importing it loads its native library.

Only corral.engine (whose `llama` module runs in the worker process) may import it; the server
process plans requests, grammars included, without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_layers import MODULES, REPO, imported_modules

OUTSIDE_ENGINE = [(layer, path) for layer, path in MODULES if layer != "engine"]


def llama_cpp_imports(path: Path) -> list[int]:
    """The lines of `path` that import llama_cpp (or a module of it), lazily or not."""
    return [line for line, name in imported_modules(path) if name == "llama_cpp" or name.startswith("llama_cpp.")]


@pytest.mark.parametrize("layer, path", OUTSIDE_ENGINE,
                         ids=[p.relative_to(REPO).as_posix() for _, p in OUTSIDE_ENGINE])
def test_only_the_engine_imports_llama_cpp(layer: str, path: Path):
    assert llama_cpp_imports(path) == [], f"{path.relative_to(REPO)} imports llama_cpp outside corral.engine"


def test_the_scan_sees_an_import():
    engine_llama = REPO / "engine" / "llama.py"
    assert llama_cpp_imports(engine_llama), "engine/llama.py should be where llama_cpp is imported"


PROBE = """
import sys
import corral.server.app
from corral.runtime.structured import format_grammar, tool_call_grammar
assert format_grammar("json") and format_grammar({"type": "object", "properties": {"a": {"type": "string"}}})
assert tool_call_grammar([{"name": "f", "parameters": {"type": "object", "properties": {}}}], allow_text=True)
loaded = sorted(m for m in sys.modules if m == "llama_cpp" or m.startswith("llama_cpp."))
print(",".join(loaded))
"""


def test_the_server_process_never_loads_llama_cpp():
    """Importing the app and writing every kind of grammar leaves llama_cpp unimported."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
