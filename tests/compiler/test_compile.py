"""Definition IR -> RuntimeSpec: weights resolution, templates, stops, parameters and digests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from corral.compiler.compile import CompileOptions, compile_definition
from corral.compiler.errors import GGUFError, TemplateError, UnknownModelError, WeightsError
from corral.machine.gpus import GpuInventory
from corral.compiler.resolve import NoModels, ParentModel, weights_ref
from corral.compiler.spec import ChatMessage
from corral.dsl import parse_modelfile
from tests.compiler.resolvers import Stored
from tests.ggufs import TinyLlama, truncated, write_tiny_llama

CPU = CompileOptions(inventory=GpuInventory(reason="no GPU in the test"), memory_bytes=1 << 40)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_tiny_llama(tmp_path / "tiny.gguf")
    write_tiny_llama(tmp_path / "plain.gguf", replace(TinyLlama(), chat_template=None))
    return tmp_path


def compile_text(text: str, folder: Path, resolver=None, path: str = "m.Modelfile"):
    d = parse_modelfile(text, str(folder / path)).definition
    return compile_definition(d, name="m", base_dir=folder, resolver=resolver or NoModels(), options=CPU)


def error_of(text: str, folder: Path, resolver=None):
    with pytest.raises(Exception) as e:
        compile_text(text, folder, resolver)
    return e.value


def test_relative_from_resolves_against_the_definition_folder(folder):
    spec = compile_text("FROM ./tiny.gguf", folder)
    assert spec.weights.path == str((folder / "tiny.gguf").resolve())
    assert spec.model.architecture == "llama" and spec.model.block_count == 2


def test_home_is_expanded(folder, monkeypatch):
    monkeypatch.setenv("HOME", str(folder))
    assert compile_text("FROM ~/tiny.gguf", folder / "elsewhere").weights.path == str((folder / "tiny.gguf").resolve())


def test_a_folder_with_one_gguf_is_that_file(folder):
    (folder / "one").mkdir()
    write_tiny_llama(folder / "one" / "w.gguf")
    assert compile_text("FROM ./one", folder).weights.path.endswith("one/w.gguf")


@pytest.mark.parametrize(
    "text, kind, message, line",
    [
        ("FROM ./missing.gguf", WeightsError, "FROM {folder}/missing.gguf: no such file", 1),
        ("FROM ./st", WeightsError, "FROM {folder}/st is a safetensors model; Corral runs GGUF files", 1),
        ("FROM llama9", UnknownModelError, "model 'llama9' not found", 1),
        ("# broken weights\nFROM ./broken.gguf", GGUFError, None, 2),
        ('FROM ./tiny.gguf\nTEMPLATE "{{ .Prompt "', TemplateError, None, 2),
        ("FROM ./tiny.gguf\nTEMPLATE {% for %}", TemplateError, None, 2),
        ("FROM ./tiny.gguf\nADAPTER ./nope.gguf", WeightsError, "ADAPTER {folder}/nope.gguf: no such file", 2),
    ],
)
def test_compile_errors_name_the_definition_line(folder, text, kind, message, line):
    (folder / "st").mkdir()
    (folder / "st" / "model.safetensors").write_bytes(b"{}")
    truncated(folder / "tiny.gguf", folder / "broken.gguf", 100)
    e = error_of(text, folder)
    assert isinstance(e, kind)
    if message:
        assert e.message == message.format(folder=folder)
    assert e.span.line == line and e.span.path.endswith("m.Modelfile")


def test_unknown_model_suggests_pull(folder):
    assert error_of("FROM llama9", folder).hint.startswith("run `corral pull llama9`")


@pytest.mark.parametrize(
    "text, kind, origin",
    [
        ("FROM ./tiny.gguf", "jinja", "gguf"),
        ("FROM ./plain.gguf", "go", "default"),
        ('FROM ./tiny.gguf\nTEMPLATE "{{ .System }} {{ .Prompt }}"', "go", "definition"),
        ('FROM ./tiny.gguf\nTEMPLATE "{% for m in messages %}{{ m.content }}{% endfor %}"', "jinja", "definition"),
    ],
)
def test_template_source(folder, text, kind, origin):
    spec = compile_text(text, folder)
    assert (spec.template.kind, spec.template.origin) == (kind, origin)


def test_stops_come_from_parameters_then_the_gguf_eos(folder):
    spec = compile_text("FROM ./tiny.gguf\nPARAMETER stop <|im_end|>\nPARAMETER stop ###", folder)
    assert spec.stop == ("<|im_end|>", "###", "</s>")


def test_known_template_brings_its_stops(folder):
    spec = compile_text('FROM ./plain.gguf\nTEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n'
                        '{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"""', folder)
    assert spec.stop[-1] == "</s>"


def test_parameters_split_into_sampling_options_and_load_options(folder):
    spec = compile_text("FROM ./tiny.gguf\nPARAMETER temperature 0.1\nPARAMETER num_ctx 256\n"
                        "PARAMETER num_thread 2\nPARAMETER seed 7", folder)
    assert spec.options == {"temperature": 0.1, "seed": 7}
    assert (spec.load.num_ctx, spec.load.num_thread) == (256, 2)
    assert spec.plan.backend == "cpu" and "no GPU in the test" in " ".join(spec.plan.reasons)


def test_num_ctx_defaults_to_4096_capped_by_the_training_context(folder):
    assert compile_text("FROM ./tiny.gguf", folder).load.num_ctx == 512  # TinyLlama trains at 512


@pytest.mark.parametrize("asked, loaded", [(256, 256), (512, 512), (513, 512), (1 << 20, 512)])
def test_num_ctx_is_clamped_to_the_training_context_with_a_reason(folder, asked, loaded):
    spec = compile_text(f"FROM ./tiny.gguf\nPARAMETER num_ctx {asked}", folder)  # TinyLlama trains at 512
    assert (spec.load.num_ctx, spec.plan.num_ctx) == (loaded, loaded)
    clamp = f"num_ctx {asked} is longer than the 512 tokens the model was trained on; clamped to 512"
    assert (clamp in spec.plan.reasons) == (asked > 512)


def test_digests_tell_a_spec_change_from_a_reload(folder):
    a = compile_text("FROM ./tiny.gguf\nSYSTEM a", folder)
    again = compile_text("FROM ./tiny.gguf\nSYSTEM a", folder)
    b = compile_text("FROM ./tiny.gguf\nSYSTEM b", folder)
    c = compile_text("FROM ./tiny.gguf\nSYSTEM a\nPARAMETER num_ctx 128", folder)
    assert a.digest == again.digest
    assert a.digest != b.digest and a.load_digest == b.load_digest
    assert a.load_digest != c.load_digest


def test_from_a_stored_model_inherits_and_overrides(folder):
    base = ParentModel(name="base", weights=weights_ref(folder / "tiny.gguf", "sha256:" + "a" * 64),
                     template="{{ .Prompt }}", system="base system",
                     parameters={"temperature": 0.5, "top_k": 3, "stop": ("x",)},
                     messages=(ChatMessage(role="user", content="hi"),), licenses=("MIT",))
    spec = compile_text("FROM base\nPARAMETER temperature 0.9\nLICENSE Apache", folder, Stored(base))
    assert spec.template.source == "{{ .Prompt }}" and spec.template.origin == "base"
    assert spec.system == "base system" and spec.messages == base.messages
    assert spec.options == {"temperature": 0.9, "top_k": 3}
    assert spec.stop[0] == "x" and spec.licenses == ("MIT", "Apache")
    overridden = compile_text('FROM base\nSYSTEM mine\nMESSAGE user other', folder, Stored(base))
    assert overridden.system == "mine" and [m.content for m in overridden.messages] == ["other"]


def test_gemma3_without_a_gguf_template_gets_ollamas_gemma3_template(gemma3_gguf, tmp_path):
    spec = compile_text(f"FROM {gemma3_gguf}", tmp_path)
    assert (spec.template.kind, spec.template.name, spec.template.origin) == ("go", "gemma3-instruct", "default")
    assert "<end_of_turn>" in spec.stop
    from corral.compiler.templates.prompt import chat_prompt

    assert chat_prompt(spec, [{"role": "user", "content": "Hi"}]) == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n\n"  # byte-exact as Ollama


def test_smollm2_uses_its_own_jinja_template(smollm2_gguf, tmp_path):
    spec = compile_text(f"FROM {smollm2_gguf}", tmp_path)
    assert (spec.template.kind, spec.template.origin) == ("jinja", "gguf")
    assert spec.model.architecture == "llama" and spec.model.quantization == "Q4_1"
    assert "<|im_end|>" in spec.stop


@pytest.mark.parametrize(
    "num_parallel, memory, slots",
    [
        (0, 1 << 40, 4),  # auto: the cap when memory is plentiful
        (0, 1, 1),  # auto: one slot when memory is short
        (2, 1 << 40, 2),  # explicit
    ],
)
def test_slots_auto_or_explicit(folder, num_parallel, memory, slots):
    options = CompileOptions(inventory=GpuInventory(reason="no GPU in the test"), num_parallel=num_parallel,
                             memory_bytes=memory)
    d = parse_modelfile("FROM ./tiny.gguf", str(folder / "m.Modelfile")).definition
    spec = compile_definition(d, name="m", base_dir=folder, resolver=NoModels(), options=options)
    assert spec.load.num_parallel == slots == spec.plan.num_parallel
    assert spec.plan.kv_bytes == slots * compile_definition(
        d, name="m", base_dir=folder, resolver=NoModels(),
        options=replace(options, num_parallel=1)).plan.kv_bytes


def test_compile_is_pure_the_machine_is_read_by_the_caller(folder, monkeypatch):
    """The same definition and readings give the same spec, however the machine's memory moves
    between two compiles (a library recompile must not change num_parallel and force a reload)."""
    import psutil

    from corral.machine.memory import available_memory

    d = parse_modelfile("FROM ./tiny.gguf", str(folder / "m.Modelfile")).definition
    options = CompileOptions(inventory=GpuInventory(reason="no GPU in the test"), memory_bytes=1 << 40)
    specs = []
    for free in (1 << 40, 1):  # the machine's reading: plenty, then almost nothing
        reading = psutil.virtual_memory()._replace(available=free)
        monkeypatch.setattr(psutil, "virtual_memory", lambda reading=reading: reading)
        assert available_memory() == free
        specs.append(compile_definition(d, name="m", base_dir=folder, resolver=NoModels(), options=options))
    assert specs[0].digest == specs[1].digest and specs[0].load_digest == specs[1].load_digest
    assert specs[1].load.num_parallel == 4
    # Only a new reading, passed in by the caller, changes the plan.
    short = compile_definition(d, name="m", base_dir=folder, resolver=NoModels(),
                               options=replace(options, memory_bytes=1))
    assert short.load.num_parallel == 1 and short.load_digest != specs[0].load_digest
