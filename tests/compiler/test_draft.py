"""DRAFT: a draft model for speculative decoding, checked at compile time to share the vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.compiler.compile import CompileOptions, compile_definition
from corral.compiler.errors import CompileError, UnknownModelError, WeightsError
from corral.compiler.resolve import NoModels, ParentModel, weights_ref
from corral.dsl import parse_modelfile
from corral.machine.gpus import GpuInventory
from tests.compiler.resolvers import Stored
from tests.ggufs import TinyLlama, write_tiny_llama

CPU = CompileOptions(inventory=GpuInventory(reason="no GPU in the test"), memory_bytes=1 << 40)


@dataclass(frozen=True)
class WiderVocab(TinyLlama):
    """The tiny model with one more token: another vocabulary."""

    @property
    def vocab(self) -> list[str]:
        return super().vocab + ["extra"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_tiny_llama(tmp_path / "tiny.gguf")
    write_tiny_llama(tmp_path / "draft.gguf", seed=1)  # other weights, the same vocabulary
    write_tiny_llama(tmp_path / "wider.gguf", WiderVocab())
    return tmp_path


def compile_text(text: str, folder: Path, resolver=None):
    d = parse_modelfile(text, str(folder / "m.Modelfile")).definition
    return compile_definition(d, name="m", base_dir=folder, resolver=resolver or NoModels(), options=CPU)


def test_a_draft_path_is_resolved_and_kept(folder: Path) -> None:
    spec = compile_text("FROM ./tiny.gguf\nDRAFT ./draft.gguf\n", folder)
    assert spec.draft is not None and spec.draft.path == str((folder / "draft.gguf").resolve())
    plain = compile_text("FROM ./tiny.gguf\n", folder)
    assert plain.draft is None
    # The draft is loaded with the weights: another draft is another load.
    assert spec.load_digest != plain.load_digest


def test_a_draft_may_be_a_model_name(folder: Path) -> None:
    stored = Stored(ParentModel(name="tiny-draft", weights=weights_ref(folder / "draft.gguf")))
    spec = compile_text("FROM ./tiny.gguf\nDRAFT tiny-draft\n", folder, stored)
    assert spec.draft is not None and spec.draft.path == str(folder / "draft.gguf")


@pytest.mark.parametrize(("draft", "error", "message"), [
    ("./wider.gguf", CompileError, "the DRAFT model's vocabulary (llama, 270 tokens) is not the model's "
                                   "(llama, 269 tokens)"),
    ("./missing.gguf", WeightsError, "DRAFT"),
    ("no-such-model", UnknownModelError, "model 'no-such-model' not found"),
])
def test_a_draft_that_cannot_serve_is_an_error_at_its_line(folder: Path, draft: str, error: type,
                                                           message: str) -> None:
    with pytest.raises(error) as e:
        compile_text(f"FROM ./tiny.gguf\nDRAFT {draft}\n", folder)
    assert message in e.value.message
    assert (e.value.span.line, e.value.span.column) == (2, 7)


def test_draft_no_longer_warns() -> None:
    parsed = parse_modelfile("FROM ./m.gguf\nDRAFT ./d.gguf\n", "m.Modelfile")
    assert parsed.warnings == ()
