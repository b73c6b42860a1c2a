"""A split GGUF from files: FROM its first shard finds the others by llama.cpp's names, `create`
stores one model layer per shard, and the stored model compiles back to the same shards."""

from __future__ import annotations

import pytest

from corral.compiler.compile import compile_definition
from corral.compiler.errors import WeightsError
from corral.compiler.gguf.info import read_model_info
from corral.compiler.resolve import NoModels
from corral.compiler.spec import _digest
from corral.dsl import parse_modelfile
from corral.sources.stored import Models
from corral.store.create import create_model
from corral.store.manifest import MediaType
from corral.store.store import Store
from tests.ggufs import write_tiny_llama, write_tiny_llama_split
from tests.registry.conftest import CPU


def definition(text: str, folder):
    return parse_modelfile(text, str(folder / "Modelfile")).definition


@pytest.fixture
def shards(tmp_path):
    (tmp_path / "w").mkdir()
    return write_tiny_llama_split(tmp_path / "w" / "Tiny.gguf", shards=3, seed=3)


def test_from_the_first_shard_takes_the_whole_set(shards, tmp_path):
    spec = compile_definition(definition(f"FROM {shards[0]}\n", tmp_path), name="split", base_dir=tmp_path,
                              resolver=NoModels(), options=CPU)
    assert [w.path for w in spec.weight_files] == [str(p.resolve()) for p in shards]
    one = read_model_info(write_tiny_llama(tmp_path / "whole.gguf", seed=3))
    assert spec.plan.weights_bytes == one.weights_bytes and spec.model.parameter_count == one.parameter_count
    assert '"splits"' in spec.model_dump_json() and spec.digest != spec.model_copy(update={"splits": ()}).digest


def test_a_one_file_spec_keeps_its_digest_without_a_splits_field(tmp_path):
    path = write_tiny_llama(tmp_path / "one.gguf")
    spec = compile_definition(definition(f"FROM {path}\n", tmp_path), name="one", base_dir=tmp_path,
                              resolver=NoModels(), options=CPU)
    assert spec.splits == () and spec.weight_files == (spec.weights,)
    data = spec.model_dump(mode="json")
    del data["splits"], data["parser"], data["projector"]  # none is in the digest while empty
    del data["plan"]["vision_bytes"], data["plan"]["draft_bytes"]
    data.pop("draft", None)  # nor a DRAFT
    assert spec.digest == _digest(data)


def test_create_stores_one_model_layer_per_shard_and_the_model_compiles_back(shards, tmp_path):
    store = Store(tmp_path / "models")
    create_model(store, "split", definition(f"FROM {shards[0]}\nPARAMETER temperature 0.3\n", tmp_path),
                 base_dir=tmp_path, options=CPU)
    layers = store.read_manifest("split").layers_of(MediaType.MODEL)
    assert [store.blob_path(layer.digest).read_bytes() for layer in layers] == [p.read_bytes() for p in shards]
    models = Models(store, CPU)
    spec = models.spec("split")
    assert [w.path for w in spec.weight_files] == [str(store.blob_path(layer.digest)) for layer in layers]
    # FROM the stored model, and FROM the blob `show --modelfile` names: the same three shards.
    derived = create_model(store, "derived", definition("FROM split\nSYSTEM Short.\n", tmp_path),
                           base_dir=tmp_path, options=CPU)
    assert [w.digest for w in derived.spec.weight_files] == [str(layer.digest) for layer in layers]
    assert store.read_manifest("derived").layers_of(MediaType.MODEL) == layers
    again = create_model(store, "again", definition(models.modelfile("split"), tmp_path), base_dir=tmp_path,
                         options=CPU)
    assert [w.path for w in again.spec.weight_files] == [str(store.blob_path(layer.digest)) for layer in layers]


def test_a_missing_or_misplaced_shard_is_a_clear_error(shards, tmp_path):
    def compile_from(path):
        return compile_definition(definition(f"FROM {path}\n", tmp_path), name="x", base_dir=tmp_path,
                                  resolver=NoModels(), options=CPU)

    with pytest.raises(WeightsError, match="is shard 2 of 3 of a split GGUF"):
        compile_from(shards[1])  # FROM must name the first shard
    renamed = tmp_path / "first.gguf"
    renamed.write_bytes(shards[0].read_bytes())
    with pytest.raises(WeightsError, match="first of 3 shards") as caught:
        compile_from(renamed)
    assert "NAME-00001-of-00003.gguf" in caught.value.hint
    shards[2].unlink()
    with pytest.raises(WeightsError, match=r"shard 3 \(Tiny-00003-of-00003.gguf\) is not beside it"):
        compile_from(shards[0])
