"""/api/show, /api/tags, /api/ps and /api/version describe a model one way, whichever source
it comes from: the same fields for a store model and a library model (read with the official
`ollama` client), one digest per model across the routes, the template in the syntax it was
written in, and a library model whose latest edit is broken described as it serves."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import httpx
import ollama
import pytest

from corral.config.settings import Settings
from corral.config.version import OLLAMA_API_VERSION, corral_version
from corral.dsl import parse_modelfile
from corral.runtime.scheduler import Scheduler, SchedulerSettings
from corral.server.app import create_app
from corral.sources.catalog import Catalog
from corral.sources.library import Library
from corral.sources.stored import Models
from corral.store.create import StoreResolver, create_model
from corral.store.store import Store
from tests.ggufs import TinyLlama
from tests.server.conftest import CPU, FakeServer
from tests.server.fakes import ScriptedEngines
from tests.server.live import LiveServer

GO = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n"
MODELFILE = f'FROM GGUF\nTEMPLATE """{GO}"""\nSYSTEM You are Smol.\nPARAMETER stop <|im_end|>\nLICENSE MIT\n'
SHOW_FIELDS = {"license", "modelfile", "parameters", "template", "template_jinja", "system", "details", "model_info",
               "capabilities", "modified_at"}


@pytest.fixture
def both(tmp_path, fake_store) -> Iterator[FakeServer]:
    """A server with `gostore` in the store and `golib` in a library, both the tiny `smol` GGUF
    with the same Go template, system prompt and licence."""
    settings = Settings(models=tmp_path / "models")
    shutil.copytree(fake_store, settings.models)
    gguf = fake_store.parent / "smol.gguf"
    store = Store(settings.models)
    text = MODELFILE.replace("GGUF", str(gguf), 1)
    create_model(store, "gostore", parse_modelfile(text, str(tmp_path / "x.Modelfile")).definition,
                 base_dir=tmp_path, options=CPU)
    root = tmp_path / "library"
    root.mkdir()
    (root / "golib.Modelfile").write_text(text)
    library = Library(root, CPU, StoreResolver(store))
    library.sync()
    models = Catalog(Models(store, CPU), library)
    engines = ScriptedEngines()
    scheduler = Scheduler(models, SchedulerSettings(keep_alive=-1, max_loaded_models=4, max_queue=8),
                          engine_factory=engines)
    app = create_app(settings, scheduler=scheduler, models=models, store=store)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield FakeServer(server, client, settings, store, models, scheduler, engines)


def test_store_and_library_models_show_the_same_fields(both):
    shows = {name: both.client.post("/api/show", json={"model": name}).json() for name in ("gostore", "golib")}
    store, lib = shows["gostore"], shows["golib"]
    assert set(store) == set(lib) == SHOW_FIELDS
    assert store["model_info"] == lib["model_info"] and store["capabilities"] == lib["capabilities"] == ["completion"]
    assert store["details"] == lib["details"] == {
        "parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
        "parameter_size": both.models.spec("gostore").model.parameter_size, "quantization_level": "F32",
        "context_length": TinyLlama().context, "embedding_length": TinyLlama().embd}
    assert len(store["model_info"]) > 15 and store["model_info"]["llama.block_count"] == TinyLlama().layers
    assert store["model_info"]["tokenizer.ggml.tokens"] is None  # the vocabulary only with verbose
    client = ollama.Client(host=both.url)
    for name in ("gostore", "golib"):
        shown = client.show(name)  # the official client parses every field
        assert shown.modelinfo["general.architecture"] == "llama" and shown.capabilities == ["completion"]
        assert shown.details.family == "llama" and shown.license == "MIT"


def test_verbose_adds_the_tokenizer_arrays_and_the_tensors(both):
    for name in ("gostore", "golib"):
        shown = both.client.post("/api/show", json={"model": name, "verbose": True}).json()
        assert shown["model_info"]["tokenizer.ggml.tokens"] == TinyLlama().vocab
        assert {"name": "output_norm.weight", "type": "F32", "shape": [TinyLlama().embd]} in shown["tensors"]


def test_a_go_template_is_shown_as_written_with_its_jinja_beside_it(both):
    for name in ("gostore", "golib"):
        shown = both.client.post("/api/show", json={"model": name}).json()
        assert shown["template"] == GO
        assert shown["template_jinja"] == both.models.spec(name).template.jinja and "{%" in shown["template_jinja"]
    plain = both.client.post("/api/show", json={"model": "smol"}).json()  # the GGUF's Jinja template, as is
    assert plain["template"] == both.models.spec("smol").template.source and "template_jinja" not in plain


def test_tags_list_capabilities_and_details(both):
    tags = {m["name"]: m for m in both.client.get("/api/tags").json()["models"]}
    assert tags["toolsmodel:latest"]["capabilities"] == ["completion", "tools"]
    assert tags["golib:latest"]["capabilities"] == tags["gostore:latest"]["capabilities"] == ["completion"]
    assert tags["golib:latest"]["details"] == tags["gostore:latest"]["details"]
    listed = {m.model: m for m in ollama.Client(host=both.url).list().models}
    assert listed["golib:latest"].details.family == "llama"


def test_one_digest_per_model_across_tags_ps_and_the_cli_listing(both):
    for name in ("gostore", "golib"):
        assert both.client.post("/api/generate", json={"model": name, "keep_alive": -1}).status_code == 200
    tags = {m["name"]: m["digest"] for m in both.client.get("/api/tags").json()["models"]}
    ps = {m["name"]: m["digest"] for m in both.client.get("/api/ps").json()["models"]}
    assert set(ps) == {"gostore:latest", "golib:latest"}
    assert {name: tags[name] for name in ps} == ps
    assert ps["gostore:latest"] == both.store.get("gostore").digest  # the manifest's, for a stored model
    assert ps["golib:latest"] == both.models.spec("golib").digest.removeprefix("sha256:")  # the spec's
    assert {m.model: m.digest for m in ollama.Client(host=both.url).ps().models} == ps
    ids = {m["id"] for m in both.client.get("/v1/models").json()["data"]}
    assert set(tags) == ids


def test_a_broken_edit_shows_the_served_version_and_the_error(both, tmp_path):
    before = both.client.post("/api/show", json={"model": "golib"}).json()
    path = tmp_path / "library" / "golib.Modelfile"
    path.write_text(path.read_text().replace("SYSTEM You are Smol.", "SYSTEM You are Smol.\nPARAMETER temprature 1"))
    both.models.library.sync()
    after = both.client.post("/api/show", json={"model": "golib"})
    assert after.status_code == 200
    shown = after.json()
    assert shown.pop("error") == ("library/golib.Modelfile:8:11: unknown parameter 'temprature' "
                                  "(hint: did you mean 'temperature'?)")
    assert {k: v for k, v in shown.items() if k != "modified_at"} == \
        {k: v for k, v in before.items() if k != "modified_at"}  # the version still serving
    assert str(tmp_path) not in after.text


def test_corral_show_prints_a_broken_edits_error_under_the_served_version(both, tmp_path, capsys, monkeypatch):
    from corral.cli.main import main

    path = tmp_path / "library" / "golib.Modelfile"
    path.write_text(path.read_text() + "PARAMETER temprature 1\n")
    both.models.library.sync()
    monkeypatch.setenv("CORRAL_HOST", both.url.removeprefix("http://"))
    assert main(["show", "golib"]) == 0
    out = capsys.readouterr().out
    assert "  Error (in the latest edit; shown is the version serving)\n    library/golib.Modelfile:" in out
    assert "You are Smol." in out and "temprature" in out


def test_version_is_the_ollama_api_level_with_corrals_own_beside_it(both):
    assert both.client.get("/api/version").json() == {"version": OLLAMA_API_VERSION, "corral_version": corral_version()}
    assert both.client.head("/api/version").status_code == 200


def test_corral_version_prints_both(capsys):
    from corral.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"corral {corral_version()} (Ollama API {OLLAMA_API_VERSION})\n"


def test_corral_show_verbose_prints_the_metadata_capabilities_and_tensors(both, capsys, monkeypatch):
    from corral.cli.main import main

    monkeypatch.setenv("CORRAL_HOST", both.url.removeprefix("http://"))
    assert main(["show", "-v", "golib"]) == 0
    out = capsys.readouterr().out
    assert "  Capabilities\n    completion\n" in out
    metadata = out.split("  Metadata\n")[1].split("\n\n")[0].splitlines()
    assert f"    {'llama.block_count':<40}{TinyLlama().layers}" in metadata
    assert f"    {'tokenizer.ggml.tokens':<40}[<unk> <s> </s> <0x00> <0x01> ...+{len(TinyLlama().vocab) - 5} more]" in metadata
    assert f"    {'output_norm.weight':<40}{'F32':<10}[{TinyLlama().embd}]" in out.split("  Tensors\n")[1]
    assert main(["show", "golib"]) == 0
    assert "Metadata" not in capsys.readouterr().out
