"""DRAFT: a draft model for speculative decoding, checked at compile time to share the vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.compiler.compile import CompileOptions, compile_definition
from corral.compiler.errors import CompileError, UnknownModelError, WeightsError
from corral.compiler.gguf.check import check_gguf
from corral.compiler.gguf.info import model_info_from_header
from corral.compiler.plan import GPU_RESERVE_BYTES, draft_total, human_bytes
from corral.compiler.resolve import NoModels, ParentModel, weights_ref
from corral.dsl import parse_modelfile
from corral.machine.gpus import GpuDevice, GpuInventory

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


def test_the_plan_makes_room_for_the_draft(folder: Path) -> None:
    spec = compile_text("FROM ./tiny.gguf\nDRAFT ./draft.gguf\n", folder)
    plain = compile_text("FROM ./tiny.gguf\n", folder)
    info = model_info_from_header(check_gguf(folder / "draft.gguf"))
    expected = draft_total(info, num_ctx=spec.load.num_ctx, num_batch=spec.load.num_batch)
    assert spec.plan.draft_bytes == expected > (folder / "draft.gguf").stat().st_size
    assert spec.plan.total_bytes == plain.plan.total_bytes + expected
    assert spec.plan.cpu_bytes == plain.plan.cpu_bytes + expected
    assert any(r.startswith("DRAFT model and one sequence's KV:") for r in spec.plan.reasons)
    assert ("draft", f"{human_bytes(expected)} (the DRAFT model and one sequence's KV)") in spec.plan.rows()
    assert plain.plan.draft_bytes == 0 and all(label != "draft" for label, _ in plain.plan.rows())


@pytest.mark.parametrize(("room_for_draft", "layers"), [(0.5, 0), (1.0, 3)])
def test_on_a_gpu_the_draft_takes_room_from_the_model(folder: Path, room_for_draft: float, layers: int) -> None:
    # Injected NVML readings: a GPU with room for the model alone and part of its draft, or for
    # both. The tiny model is too small to split, so it goes to the GPU whole or not at all.
    one = CompileOptions(inventory=CPU.inventory, memory_bytes=1 << 40, num_parallel=1)
    plain = compile_definition(parse_modelfile("FROM ./tiny.gguf\n", str(folder / "m.Modelfile")).definition,
                               name="m", base_dir=folder, resolver=NoModels(), options=one).plan
    draft = compile_text("FROM ./tiny.gguf\nDRAFT ./draft.gguf\n", folder).plan.draft_bytes
    free = GPU_RESERVE_BYTES + plain.total_bytes + int(draft * room_for_draft)
    gpu = CompileOptions(inventory=GpuInventory(devices=(GpuDevice(index=0, name="G", total_bytes=free,
                                                                   free_bytes=free),)),
                         memory_bytes=1 << 40, num_parallel=1)

    def planned(text: str):
        d = parse_modelfile(text, str(folder / "m.Modelfile")).definition
        return compile_definition(d, name="m", base_dir=folder, resolver=NoModels(), options=gpu).plan

    assert planned("FROM ./tiny.gguf\n").n_gpu_layers == 3  # alone it always fits
    beside = planned("FROM ./tiny.gguf\nDRAFT ./draft.gguf\n")
    assert beside.n_gpu_layers == layers, beside.reasons
