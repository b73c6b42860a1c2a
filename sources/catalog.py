"""Every model a server can run: the library's definitions first, then the store's models.

A library model shadows a stored model of the same name: the library is what a team deploys.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from corral.compiler.spec import RuntimeSpec
from corral.dsl import format_modelfile, load
from corral.sources.library import Library
from corral.sources.stored import ModelListing, Models, ShowInfo, capabilities_of, details_of, parameters_text


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

    def list(self) -> list[ModelListing]:
        out: list[ModelListing] = []
        seen: set[str] = set()
        if self.library is not None:
            for entry in self.library.entries():
                if entry.spec is None:
                    continue
                seen.add(entry.name.lower())
                size = sum(w.size for w in entry.spec.weight_files) + sum(a.size for a in entry.spec.adapters)
                out.append(ModelListing(entry.name, entry.name, entry.spec.digest.removeprefix("sha256:"), size,
                                        _mtime(entry.path), details_of(entry.spec), "library"))
        out += [m for m in self.models.list() if m.name.lower() not in seen]
        return out

    def modelfile(self, name: str) -> str:
        if self.library is not None and self.library.has(name):
            spec = self.library.spec(name)
            if spec.source:
                return format_modelfile(load(spec.source).definition)
        return self.models.modelfile(name)

    def show(self, name: str) -> ShowInfo:
        if self.library is None or not self.library.has(name):
            return self.models.show(name)
        spec = self.library.spec(name)
        m = spec.model
        return ShowInfo(
            modelfile=self.modelfile(name), parameters=parameters_text(spec),
            template=spec.template.source if spec.template.origin != "default" else "",
            system=spec.system or "", license="\n".join(spec.licenses), details=details_of(spec),
            model_info={"general.architecture": m.architecture, "general.parameter_count": m.parameter_count,
                        f"{m.architecture}.context_length": m.context_length},
            capabilities=capabilities_of(spec), modified_at=_mtime(spec.source or ""),
            messages=[msg.model_dump() for msg in spec.messages], spec=spec,
        )


def _mtime(path: str) -> datetime:
    try:
        return datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc)
    except OSError:
        return datetime.now(timezone.utc)
