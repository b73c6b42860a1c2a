"""Every model a server can run: the library's definitions first, then the store's models.

A library model shadows a stored model of the same name: the library is what a team deploys.
Both are described by one code path (corral.sources.describe) and have one digest each, the same
in /api/tags, /api/ps and `corral list`: a stored model's is its manifest's, a library model's
its compiled spec's (`digest_of`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from corral.compiler.spec import RuntimeSpec
from corral.dsl import format_modelfile
from corral.sources.describe import ShowInfo
from corral.sources.library import Entry, Library
from corral.sources.stored import ModelListing, Models


class Catalog:
    """The ModelSource the server and the scheduler use."""

    def __init__(self, models: Models, library: Library | None = None):
        self.models = models
        self.library = library

    @property
    def options(self):
        """The machine's compile options (GPU inventory, slots), shared with /api/create."""
        return self.models.options

    def spec(self, name: str) -> RuntimeSpec:
        if self.library is not None and self.library.has(name):
            return self.library.spec(name)
        return self.models.spec(name)

    def digest_of(self, spec: RuntimeSpec) -> str:
        """The one digest (hex) a model is shown with: its manifest's if it came from the store, else
        its spec's."""
        return self.models.digest_of(spec) or spec.digest.removeprefix("sha256:")

    def list(self) -> list[ModelListing]:
        out: list[ModelListing] = []
        seen: set[str] = set()
        if self.library is not None:
            for entry in self.library.entries():
                if entry.spec is None:
                    continue
                seen.add(entry.name.lower())
                size = sum(w.size for w in entry.spec.weight_files) + sum(a.size for a in entry.spec.adapters)
                try:
                    facts = self.models.describer.facts(entry.spec)
                    details, caps = facts.details, facts.capabilities
                except Exception:  # weights gone since the compile: listed, as a broken stored model is
                    details, caps = {"format": "gguf"}, []
                out.append(ModelListing(entry.name, entry.name, self.digest_of(entry.spec), size,
                                        _mtime(entry.path), details, "library", caps))
        out += [m for m in self.models.list() if m.name.lower() not in seen]
        return out

    def modelfile(self, name: str) -> str:
        entry = self._library_entry(name)
        if entry is not None:
            return _modelfile(entry)
        return self.models.modelfile(name)

    def _library_entry(self, name: str) -> Entry | None:
        if self.library is None or not self.library.has(name):
            return None
        return self.library.entry(name)

    def show(self, name: str, *, verbose: bool = False) -> ShowInfo:
        """/api/show of `name`; a library model whose latest edit is broken is described as served
        (its last good version), with the edit's error."""
        entry = self._library_entry(name)
        if entry is None or entry.spec is None:
            return self.models.show(name, verbose=verbose)
        error = _problem(entry, self.library.root) if entry.problem is not None and self.library else ""
        return self.models.describer.show(entry.spec, modelfile=_modelfile(entry), modified_at=_mtime(entry.path),
                                          verbose=verbose, error=error)


def _modelfile(entry: Entry) -> str:
    """The Modelfile of the version being served (not of a broken edit of the file since)."""
    return format_modelfile(entry.definition) if entry.definition is not None else ""


def _problem(entry: Entry, root: Path) -> str:
    """`library/x.Modelfile:3:1: message`: where the edit is broken, relative to the library's
    parent folder (no absolute host path in an answer), and why."""
    p = entry.problem
    assert p is not None
    try:
        where = str(Path(p.path).resolve().relative_to(root.resolve().parent))
    except ValueError:
        where = Path(p.path).name
    position = f":{p.line}:{p.column}" if p.line else ""
    return f"{where}{position}: {p.message}" + (f" (hint: {p.hint})" if p.hint else "")


def _mtime(path: str) -> datetime:
    try:
        return datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc)
    except OSError:
        return datetime.now(timezone.utc)
