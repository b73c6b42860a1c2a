"""The definitions shipped in library/ are valid, and compile against the demo weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cli.main import main
from corral.compiler.compile import CompileOptions, compile_definition
from corral.machine.gpus import GpuInventory
from corral.compiler.resolve import NoModels
from corral.dsl import load
from corral.sources.library import discover

LIBRARY = Path(__file__).resolve().parent.parent / "library"
DEFINITIONS = discover(LIBRARY)


def test_the_library_holds_the_demo_a_toml_and_a_go_template():
    names = {p.name for p in DEFINITIONS}
    assert {"smollm2.Modelfile", "smollm2-terse.toml", "smollm2-gotemplate.Modelfile"} <= names


@pytest.mark.parametrize("path", DEFINITIONS, ids=[p.name for p in DEFINITIONS])
def test_each_definition_checks_and_compiles(path, smollm2_gguf, tmp_path, capsys):
    assert main(["check", str(path)]) == 0
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "SmolLM2-135M-Instruct.Q4_1.gguf").symlink_to(smollm2_gguf)
    spec = compile_definition(load(path).definition, name=path.stem, base_dir=tmp_path, resolver=NoModels(),
                              options=CompileOptions(inventory=GpuInventory(reason="test"), memory_bytes=1 << 40))
    assert spec.model.architecture == "llama"
    assert "<|im_end|>" in spec.stop
