"""What `/api/show` and `/api/tags` say about a model: one code path for store and library models.

Everything comes from the compiled spec and the GGUF's header (read again through the bounded
check, which costs milliseconds and never trusts a length in the file): the details, the
capabilities, `model_info` (the GGUF's metadata as Ollama gives it) and, with `verbose`, the
long arrays and the tensors. A model is described the same whichever source it comes from;
only the Modelfile text, the time and (for a library model whose latest edit is broken) the
error differ, and the caller passes those.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from corral.compiler.capabilities import capabilities
from corral.compiler.gguf.check import GGUFHeader, check_gguf
from corral.compiler.gguf.info import show_metadata, show_tensors
from corral.compiler.spec import RuntimeSpec

_CACHED = 256  # specs whose facts are kept; /api/tags asks for every model on each call


@dataclass(frozen=True)
class ShowInfo:
    """What /api/show and `corral show` report."""

    modelfile: str
    parameters: str
    template: str
    system: str
    license: str
    details: dict[str, Any]
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: datetime
    messages: list[dict[str, str]] = field(default_factory=list)
    spec: RuntimeSpec | None = None
    template_jinja: str = ""  # what runs, when `template` is a Go template
    tensors: list[dict[str, Any]] | None = None  # with verbose
    error: str = ""  # a library model whose latest edit is broken: why (the last good one is described)


@dataclass(frozen=True)
class Facts:
    """A model's details and capabilities, as both /api/tags and /api/show list them."""

    details: dict[str, Any]
    capabilities: list[str]


def details_of(spec: RuntimeSpec) -> dict[str, Any]:
    """Ollama's `details`, with the trained context and embedding width that Ollama 0.33 adds."""
    m = spec.model
    out: dict[str, Any] = {"parent_model": "", "format": "gguf", "family": m.architecture,
                           "families": [m.architecture], "parameter_size": m.parameter_size,
                           "quantization_level": m.quantization}
    if m.context_length:
        out["context_length"] = m.context_length
    out["embedding_length"] = m.embedding_length
    return out


def parameters_text(spec: RuntimeSpec) -> str:
    """Ollama's `parameters` text: `%-30s %#v` per value, each stop on its own line."""
    lines = []
    for key, value in spec.parameters.items():
        for v in (value if isinstance(value, tuple) else (value,)):
            shown = f'"{v}"' if isinstance(v, str) else ("true" if v is True else "false" if v is False else v)
            lines.append(f"{key:<30} {shown}")
    return "\n".join(lines)


def headers_of(spec: RuntimeSpec) -> list[GGUFHeader]:
    """The checked headers of the spec's weights (every shard of a split GGUF)."""
    return [check_gguf(w.path) for w in spec.weight_files]


class Describer:
    """Facts per spec digest, cached: a listing reads each model's header once."""

    def __init__(self) -> None:
        self._facts: dict[str, Facts] = {}
        self._lock = threading.Lock()

    def facts(self, spec: RuntimeSpec) -> Facts:
        """The details and capabilities of `spec` (its GGUF header read on first ask)."""
        with self._lock:
            known = self._facts.get(spec.digest)
        if known is not None:
            return known
        header = check_gguf(spec.weights.path)
        facts = Facts(details_of(spec), capabilities(spec, header.metadata))
        with self._lock:
            if len(self._facts) >= _CACHED:
                self._facts.pop(next(iter(self._facts)))
            self._facts[spec.digest] = facts
        return facts

    def show(self, spec: RuntimeSpec, *, modelfile: str, modified_at: datetime, verbose: bool = False,
             error: str = "") -> ShowInfo:
        """The whole /api/show answer for `spec`."""
        headers = headers_of(spec)
        facts = Facts(details_of(spec), capabilities(spec, headers[0].metadata))
        t = spec.template
        return ShowInfo(
            modelfile=modelfile, parameters=parameters_text(spec),
            template=t.source if t.origin != "default" else "",
            system=spec.system or "", license="\n".join(spec.licenses), details=facts.details,
            model_info=show_metadata(headers, verbose=verbose), capabilities=facts.capabilities,
            modified_at=modified_at, messages=[msg.model_dump() for msg in spec.messages], spec=spec,
            template_jinja=t.jinja if t.kind == "go" and t.origin != "default" else "",
            tensors=show_tensors(headers) if verbose else None, error=error,
        )
