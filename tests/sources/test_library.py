"""The library folder: discovery, compile per file, last good spec kept on a broken edit, diffs."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.compiler.resolve import NoModels
from corral.store.errors import ModelNotFoundError
from corral.sources.library import Library, discover, model_name_of
from tests.ggufs import write_tiny_llama
from tests.specs import cpu_options

CPU = cpu_options()


@pytest.fixture
def lib(tmp_path: Path) -> tuple[Path, Library]:
    root = tmp_path / "library"
    root.mkdir()
    write_tiny_llama(tmp_path / "tiny.gguf")
    (root / "alpha.Modelfile").write_text("FROM ../tiny.gguf\nSYSTEM one\n")
    return root, Library(root, CPU, NoModels())


@pytest.mark.parametrize(
    "files, names",
    [
        (["a.Modelfile", "b.toml", "Modelfile"], ["Modelfile", "a.Modelfile", "b.toml"]),
        (["c/Modelfile", "d/model.toml", "e/notes.txt"], ["c/Modelfile", "d/model.toml"]),
        ([".a.Modelfile.swp", "a.Modelfile~", "#a.Modelfile#", ".hidden.toml", "x.Modelfile.tmp", "4913"], []),
    ],
)
def test_discovery(tmp_path, files, names):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("FROM x\n")
    assert [str(p.relative_to(tmp_path)) for p in discover(tmp_path)] == names


@pytest.mark.parametrize("rel, name", [("smollm2.Modelfile", "smollm2"), ("gemma/Modelfile", "gemma"),
                                       ("qwen.toml", "qwen"), ("team/model.toml", "team")])
def test_model_names(tmp_path, rel, name):
    assert model_name_of(tmp_path / rel, tmp_path) == name


def test_sync_creates_then_reports_spec_only_and_reload_changes(lib):
    root, library = lib
    assert [(c.name, c.action) for c in library.sync()] == [("alpha:latest", "create")]
    assert library.spec("alpha").system == "one"
    (root / "alpha.Modelfile").write_text("FROM ../tiny.gguf\nSYSTEM two\n")
    assert [c.action for c in library.sync()] == ["update-spec"]
    (root / "alpha.Modelfile").write_text("FROM ../tiny.gguf\nSYSTEM two\nPARAMETER num_ctx 128\n")
    assert [c.action for c in library.sync()] == ["update-reload"]
    assert library.sync() == []


def test_a_broken_edit_keeps_the_last_good_spec_and_records_where(lib):
    root, library = lib
    library.sync()
    good = library.spec("alpha")
    (root / "alpha.Modelfile").write_text("FROM ../tiny.gguf\nPARAMETER temprature 1\n")
    changes = library.sync()
    assert [c.action for c in changes] == ["error"]
    entry = library.entries()[0]
    assert entry.state == "error" and library.spec("alpha") == good
    assert (entry.problem.line, entry.problem.column) == (2, 11)
    assert entry.problem.message == "unknown parameter 'temprature'"
    (root / "alpha.Modelfile").write_text("FROM ../tiny.gguf\nSYSTEM fixed\n")
    library.sync()
    assert library.entries()[0].state == "ok" and library.spec("alpha").system == "fixed"


def test_a_new_broken_file_serves_nothing_but_is_listed_with_its_error(lib):
    root, library = lib
    (root / "beta.toml").write_text('from = "../missing.gguf"\n')
    library.sync()
    beta = [e for e in library.entries() if e.name == "beta:latest"][0]
    assert beta.state == "error" and beta.spec is None and "no such file" in beta.problem.message
    with pytest.raises(ModelNotFoundError):
        library.spec("beta")


def test_deleting_a_file_removes_the_model(lib):
    root, library = lib
    library.sync()
    (root / "alpha.Modelfile").unlink()
    assert [c.action for c in library.sync()] == ["delete"]
    assert not library.has("alpha")


def test_plan_does_not_apply(lib):
    root, library = lib
    changes, _ = library.plan()
    assert [c.action for c in changes] == ["create"] and library.entries() == []
