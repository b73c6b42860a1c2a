"""Capabilities derived from the GGUF and the template, and model_info as /api/show gives it,
over tiny synthetic GGUFs (tests/ggufs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.compiler.capabilities import capabilities
from corral.compiler.compile import compile_definition
from corral.compiler.gguf.check import check_gguf
from corral.compiler.gguf.info import show_metadata, show_tensors
from corral.compiler.resolve import NoModels
from corral.dsl import parse_modelfile
from tests.ggufs import TinyLlama, write_tiny_llama
from tests.specs import CHATML, cpu_options

TOOLS_JINJA = "{% if tools %}{{ tools | tojson }}{% endif %}" + CHATML
GO_SUFFIX = '"""{{ if .Suffix }}<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}<MID>{{ else }}{{ .Prompt }}{{ end }}"""'
GO_TOOLS = '"""{{ if .Tools }}{{ range .Tools }}{{ . }}{{ end }}{{ end }}{{ .Prompt }}"""'
THINK_JINJA = "{% if enable_thinking %}<think>{% endif %}" + CHATML


def _caps(tmp_path: Path, gguf: TinyLlama, modelfile: str = "") -> list[str]:
    path = write_tiny_llama(tmp_path / "m.gguf", gguf)
    definition = parse_modelfile(f"FROM ./m.gguf\n{modelfile}", str(tmp_path / "m.Modelfile")).definition
    spec = compile_definition(definition, name="m", base_dir=tmp_path, resolver=NoModels(), options=cpu_options())
    return capabilities(spec, check_gguf(path).metadata)


@pytest.mark.parametrize("gguf, modelfile, expected", [
    (TinyLlama(), "", ["completion"]),
    (TinyLlama(chat_template=TOOLS_JINJA), "", ["completion", "tools"]),
    (TinyLlama(), f"TEMPLATE {GO_TOOLS}", ["completion", "tools"]),
    (TinyLlama(fim=True), "", ["completion", "insert"]),  # FIM tokens in the vocabulary
    (TinyLlama(), f"TEMPLATE {GO_SUFFIX}", ["completion", "insert"]),  # a Go template that uses .Suffix
    (TinyLlama(chat_template=THINK_JINJA), "", ["completion", "thinking"]),
    (TinyLlama(), "PARSER qwen3", ["completion", "thinking"]),
    (TinyLlama(fim=True, chat_template=TOOLS_JINJA), "", ["completion", "tools", "insert"]),
    (TinyLlama(pooling=1), "", ["embedding"]),  # a pooling type: an embedding model, never completion
    (TinyLlama(architecture="bert", chat_template=TOOLS_JINJA), "", ["embedding"]),  # an encoder-only architecture
])
def test_capabilities(tmp_path, gguf, modelfile, expected):
    assert _caps(tmp_path, gguf, modelfile) == expected


def test_model_info_is_the_metadata_with_long_arrays_null_unless_verbose(tmp_path):
    tiny = TinyLlama()
    header = check_gguf(write_tiny_llama(tmp_path / "m.gguf", tiny))
    info = show_metadata([header])
    assert {k: info[k] for k in ("general.architecture", "llama.context_length", "llama.embedding_length",
                                 "llama.block_count", "llama.attention.head_count_kv", "tokenizer.ggml.bos_token_id")} == \
        {"general.architecture": "llama", "llama.context_length": tiny.context, "llama.embedding_length": tiny.embd,
         "llama.block_count": tiny.layers, "llama.attention.head_count_kv": tiny.kv_heads,
         "tokenizer.ggml.bos_token_id": 1}
    assert info["general.parameter_count"] == tiny.parameter_count
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # a float32 as its shortest decimal
    assert "general.name" not in info and "tokenizer.chat_template" not in info  # shown elsewhere
    long = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    assert [info[k] for k in long] == [None, None, None]
    full = show_metadata([header], verbose=True)
    assert full["tokenizer.ggml.tokens"] == tiny.vocab
    assert full["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 6] and len(full["tokenizer.ggml.scores"]) == len(tiny.vocab)
    tensors = show_tensors([header])
    assert tensors[0] == {"name": "token_embd.weight", "type": "F32", "shape": [tiny.embd, len(tiny.vocab)]}
    assert len(tensors) == len(tiny.matrices()) + len(tiny.norms())


@pytest.mark.model
def test_verbose_model_info_is_what_the_gguf_package_reads(smollm2_gguf):
    """The bounded reader's model_info, arrays and all, against gguf.GGUFReader on SmolLM2."""
    import gguf

    info = show_metadata([check_gguf(smollm2_gguf)], verbose=True)
    reader = gguf.GGUFReader(str(smollm2_gguf))
    fields = {name: f for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    assert set(info) == (set(fields) - {"general.name", "tokenizer.chat_template"}) | {"general.parameter_count"}
    for name, value in info.items():
        if name == "general.parameter_count":
            assert value == sum(int(t.n_elements) for t in reader.tensors) == 134_515_008
            continue
        expected = fields[name].contents()
        if isinstance(expected, list) and expected and isinstance(expected[0], float):
            assert value == pytest.approx(expected), name
        elif isinstance(expected, float):
            assert value == pytest.approx(expected), name
        else:
            assert value == expected, name
