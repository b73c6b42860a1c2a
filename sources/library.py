"""The model library: a folder of definitions, compiled into specs, reconciled on every change.

Every `*.Modelfile`, `*.toml`, and `Modelfile` (or `model.toml`) inside a subfolder of the library
is a model named after its file (or subfolder). `Library.sync()` re-reads the folder, compiles what
changed (by file content), and swaps in the new specs at once; an invalid edit keeps the last good
spec serving and records the error with its position. The scheduler compares each request's spec
with the loaded one, so a template/system/sampling change applies without a reload and a weights
or context change loads beside the old runner and drains it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from corral.compiler.compile import CompileOptions, compile_definition
from corral.compiler.errors import CompileError
from corral.compiler.resolve import ModelResolver
from corral.compiler.spec import RuntimeSpec
from corral.dsl import DefinitionError, Diagnostic, load
from corral.errors import CorralError
from corral.store import names
from corral.store.errors import InvalidNameError, ModelNotFoundError

log = logging.getLogger(__name__)

State = Literal["ok", "loading", "error"]
Action = Literal["create", "update-spec", "update-reload", "delete", "unchanged", "error"]

# Editors and git leave these beside real files; they are never definitions.
_IGNORED_PREFIXES = (".", "#", "~")
_IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".bak", ".orig", ".part")


@dataclass(frozen=True)
class Problem:
    message: str
    path: str
    line: int | None
    column: int | None
    hint: str | None = None

    @classmethod
    def of(cls, error: CorralError, path: Path) -> "Problem":
        if isinstance(error, DefinitionError):
            d: Diagnostic = error.first
        elif isinstance(error, CompileError):
            d = error.diagnostic()
        else:
            d = Diagnostic(getattr(error, "message", str(error)), None, getattr(error, "hint", None))
        span = d.span
        return cls(d.message, span.path if span else str(path), span.line if span else None,
                   span.column if span else None, d.hint)

    def render(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}: " if self.line else f"{self.path}: "
        return f"{where}error: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")


@dataclass(frozen=True)
class Entry:
    """One library model as /api/library and `corral library status` show it."""

    name: str
    path: str
    state: State
    spec: RuntimeSpec | None  # the last good spec; kept serving while the file is broken
    problem: Problem | None
    changed_at: datetime
    source_hash: str = ""

    @property
    def digest(self) -> str | None:
        return self.spec.digest if self.spec else None


@dataclass(frozen=True)
class Change:
    name: str
    action: Action
    path: str
    detail: str = ""


@dataclass
class _Found:
    name: str
    path: Path
    content_hash: str


def model_name_of(path: Path, root: Path) -> str:
    """`smollm2.Modelfile` -> smollm2; `gemma/Modelfile` -> gemma; `x.toml` -> x."""
    if path.parent != root and path.name in ("Modelfile", "model.toml"):
        return path.parent.name
    return path.name.rsplit(".", 1)[0] if "." in path.name else path.name


def discover(root: Path) -> list[Path]:
    """The definition files of a library folder (symlinks followed), in name order."""
    if not root.is_dir():
        return []
    found: list[Path] = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(_IGNORED_PREFIXES) or path.name.endswith(_IGNORED_SUFFIXES):
            continue
        if path.is_dir():
            for inner in ("Modelfile", "model.toml"):
                if (path / inner).is_file():
                    found.append(path / inner)
                    break
        elif path.is_file() and (path.name.endswith((".Modelfile", ".modelfile", ".toml")) or path.name == "Modelfile"):
            found.append(path)
    return found


def _hash(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        target = path.resolve()
    except OSError:
        return None
    # The weights a relative FROM points at may change without the definition changing; their
    # size and mtime join the hash through the compiled spec, so only the text is hashed here.
    return hashlib.sha256(data + str(target).encode()).hexdigest()


class Library:
    """Name -> spec for the definitions in one folder; thread-safe, swapped as a whole."""

    def __init__(self, root: Path, options: CompileOptions, resolver: ModelResolver):
        self.root = root
        self.options = options
        self.resolver = resolver
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    # -- lookups --------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def _key(self, name: str) -> str:
        try:
            return names.parse(name).display_shortest().lower()
        except InvalidNameError:
            return name.lower()

    def spec(self, name: str) -> RuntimeSpec:
        with self._lock:
            entry = self._entries.get(self._key(name))
        if entry is None or entry.spec is None:
            raise ModelNotFoundError(name)
        return entry.spec

    def has(self, name: str) -> bool:
        with self._lock:
            entry = self._entries.get(self._key(name))
        return entry is not None and entry.spec is not None

    # -- reconciling ----------------------------------------------------------------------------
    def plan(self, root: Path | None = None) -> tuple[list[Change], dict[str, Entry]]:
        """Compile what changed in `root` (default: this library's folder) against what serves now."""
        root = root or self.root
        with self._lock:
            current = dict(self._entries)
        found: dict[str, _Found] = {}
        changes: list[Change] = []
        for path in discover(root):
            content_hash = _hash(path)
            if content_hash is None:
                continue
            try:
                key = names.parse(model_name_of(path, root)).display_shortest()
            except InvalidNameError as e:
                changes.append(Change(model_name_of(path, root), "error", str(path), e.message))
                continue
            found[key.lower()] = _Found(key, path, content_hash)
        new: dict[str, Entry] = {}
        now = datetime.now(timezone.utc)
        for lower, f in found.items():
            old = current.get(lower)
            if old is not None and old.source_hash == f.content_hash and old.path == str(f.path):
                new[lower] = old
                changes.append(Change(f.name, "unchanged", str(f.path)))
                continue
            try:
                parsed = load(f.path)
                spec = compile_definition(parsed.definition, name=f.name, base_dir=f.path.parent.resolve(),
                                          resolver=self.resolver, options=self.options, source=str(f.path))
            except CorralError as e:
                problem = Problem.of(e, f.path)
                new[lower] = Entry(f.name, str(f.path), "error", old.spec if old else None, problem, now, f.content_hash)
                changes.append(Change(f.name, "error", str(f.path), problem.render()))
                continue
            new[lower] = Entry(f.name, str(f.path), "ok", spec, None, now, f.content_hash)
            changes.append(Change(f.name, _action(old, spec), str(f.path)))
        for lower, old in current.items():
            if lower not in new:
                changes.append(Change(old.name, "delete", old.path))
        return changes, new

    def sync(self, root: Path | None = None) -> list[Change]:
        """Plan and apply in one step; returns what changed (unchanged models left out)."""
        started = time.perf_counter()
        changes, entries = self.plan(root)
        with self._lock:
            if root is not None:
                self.root = root
            self._entries = entries
        real = [c for c in changes if c.action != "unchanged"]
        for c in real:
            if c.action == "error":
                log.error("library: %s", c.detail)
            else:
                log.info("library: %s %s (%s)", c.action, c.name, c.path)
        if real:
            log.info("library: %d change(s) applied in %.0f ms", len(real), (time.perf_counter() - started) * 1e3)
        return real


def _action(old: Entry | None, spec: RuntimeSpec) -> Action:
    if old is None or old.spec is None:
        return "create"
    if old.spec.digest == spec.digest:
        return "unchanged"
    return "update-spec" if old.spec.load_digest == spec.load_digest else "update-reload"


__all__ = ["Change", "Entry", "Library", "Problem", "discover", "model_name_of"]
