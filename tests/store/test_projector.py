"""A model's projector (mmproj) from definition to store: `PROJECTOR` in a Modelfile and
`projector` in TOML, the spec's `projector` and its room in the memory plan, one projector layer
on create, and a stored model (or one built FROM it) that keeps it."""

from __future__ import annotations

import pytest

from corral.compiler.compile import compile_definition
from corral.compiler.errors import GGUFError, WeightsError
from corral.compiler.plan import vision_allowance
from corral.compiler.resolve import NoModels
from corral.dsl import DefinitionError, format_modelfile, format_toml, parse_modelfile, parse_toml
from corral.sources.stored import Models
from corral.store.create import create_from_request, create_model
from corral.store.manifest import MediaType
from corral.store.store import Store
from tests.ggufs import write_tiny_llama
from tests.specs import cpu_options
from tests.vision import IMAGE_SIZE, PATCH_SIZE, write_projector

CPU = cpu_options()
MODELFILE = "FROM ./tiny.gguf\nPROJECTOR ./mmproj.gguf\n"


@pytest.fixture
def folder(tmp_path):
    write_tiny_llama(tmp_path / "tiny.gguf")
    write_projector(tmp_path / "mmproj.gguf", text_embd=64)
    return tmp_path


def compiled(text: str, folder, *, toml: bool = False):
    parse = parse_toml if toml else parse_modelfile
    d = parse(text, str(folder / ("model.toml" if toml else "Modelfile"))).definition
    return compile_definition(d, name="eyes", base_dir=folder, resolver=NoModels(), options=CPU)


@pytest.mark.parametrize("text, toml", [
    (MODELFILE, False),
    ("FROM ./tiny.gguf\nFROM ./mmproj.gguf\n", False),  # Ollama's spelling: a second FROM of a file
    ('from = "./tiny.gguf"\nprojector = "./mmproj.gguf"\n', True),
])
def test_both_spellings_name_the_projector(text, toml):
    d = (parse_toml if toml else parse_modelfile)(text).definition
    assert d.projector is not None and d.projector.value == "./mmproj.gguf"
    assert format_modelfile(d) == MODELFILE
    assert format_toml(d) == 'from = "./tiny.gguf"\nprojector = "./mmproj.gguf"\n'


def test_an_empty_projector_is_an_error():
    with pytest.raises(DefinitionError, match="PROJECTOR needs a value"):
        parse_modelfile("FROM ./tiny.gguf\nPROJECTOR \n")


def test_the_spec_carries_the_projector_and_the_plan_makes_room(folder):
    spec = compiled(MODELFILE, folder)
    size = (folder / "mmproj.gguf").stat().st_size
    assert spec.projector is not None and spec.projector.path == str((folder / "mmproj.gguf").resolve())
    assert spec.plan.vision_bytes == size + vision_allowance(IMAGE_SIZE, PATCH_SIZE, 32, 2)
    plain = compiled("FROM ./tiny.gguf\n", folder)
    assert plain.projector is None and plain.plan.vision_bytes == 0
    assert spec.plan.total_bytes == plain.plan.total_bytes + spec.plan.vision_bytes
    assert spec.plan.cpu_bytes == plain.plan.cpu_bytes + spec.plan.vision_bytes
    assert any(r.startswith("projector and one image:") for r in spec.plan.reasons)
    assert spec.load_digest != plain.load_digest and spec.digest != plain.digest
    assert compiled('from = "./tiny.gguf"\nprojector = "./mmproj.gguf"\n', folder, toml=True) == spec


def test_a_second_from_naming_a_model_is_still_a_warning():
    parsed = parse_modelfile("FROM ./tiny.gguf\nFROM llama3.2\n")
    assert parsed.definition.from_.value == "llama3.2" and parsed.definition.projector is None
    assert [d.message for d in parsed.warnings] == ["FROM given more than once; the last one is used"]


@pytest.mark.parametrize("text", ["FROM ./tiny.gguf\nFROM ./tiny.gguf\n", "FROM ./tiny.gguf\nPROJECTOR ./tiny.gguf\n"])
def test_a_projector_that_is_a_model_is_an_error_at_its_line(folder, text):
    with pytest.raises(GGUFError, match="tiny.gguf is not a multimodal projector: its architecture is 'llama'") as e:
        compiled(text, folder)
    assert e.value.span.line == 2


def test_a_missing_projector_names_the_line(folder):
    with pytest.raises(WeightsError, match="PROJECTOR .*nope.gguf: no such file"):
        compiled("FROM ./tiny.gguf\nPROJECTOR ./nope.gguf\n", folder)


def test_create_stores_a_projector_layer_that_the_stored_model_keeps(folder):
    store = Store(folder / "models")
    d = parse_modelfile(MODELFILE, str(folder / "Modelfile")).definition
    created = create_model(store, "eyes", d, base_dir=folder, options=CPU)
    layers = store.read_manifest("eyes").layers
    assert [layer.media_type for layer in layers] == [MediaType.MODEL, MediaType.PROJECTOR]
    assert layers[1].size == (folder / "mmproj.gguf").stat().st_size
    models = Models(store, CPU)
    stored = models.spec("eyes")
    assert stored.projector is not None and stored.projector.path == str(store.blob_path(layers[1].digest))
    assert stored.plan.vision_bytes == created.spec.plan.vision_bytes
    assert "\nPROJECTOR " in models.modelfile("eyes")
    child = parse_modelfile("FROM eyes\nSYSTEM Look closely.\n", str(folder / "Modelfile")).definition
    built = create_model(store, "child", child, base_dir=folder, options=CPU)
    assert built.spec.projector is not None and built.spec.projector.path == stored.projector.path
    assert [layer.media_type for layer in store.read_manifest("child").layers].count(MediaType.PROJECTOR) == 1


@pytest.mark.parametrize("order", [("tiny.gguf", "mmproj.gguf"), ("mmproj.gguf", "tiny.gguf")])
def test_create_over_the_api_sorts_a_projector_out_of_files(folder, order):
    # Ollama's create sends a vision Modelfile's two FROM files as `files`: which is which is read
    # from each GGUF's architecture, not from the names or their order.
    store = Store(folder / "models")
    digests = {name: str(store.put_blob_file(folder / name)) for name in order}
    created = create_from_request(store, Models(store, CPU), "eyes", {"files": digests})
    assert created.spec.projector is not None
    assert created.spec.projector.path == str(store.blob_path(digests["mmproj.gguf"]))
    layers = store.read_manifest("eyes").layers
    assert [layer.media_type for layer in layers] == [MediaType.MODEL, MediaType.PROJECTOR]


@pytest.mark.parametrize("names, error", [
    (("tiny.gguf", "other.gguf"), "files: 2 model and 0 projector GGUFs"),
    (("mmproj.gguf",), "files: no model GGUF, only a projector"),
])
def test_files_with_two_models_or_no_model_are_refused(folder, names, error):
    (folder / "other.gguf").write_bytes((folder / "tiny.gguf").read_bytes() + b"\0" * 32)
    store = Store(folder / "models")
    digests = {name: str(store.put_blob_file(folder / name)) for name in names}
    with pytest.raises(DefinitionError, match=error):
        create_from_request(store, Models(store, CPU), "eyes", {"files": digests})
