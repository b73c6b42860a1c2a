"""The model library: a folder of definitions, compiled into specs, reconciled on every change.

Every `*.Modelfile`, `*.toml`, and `Modelfile` (or `model.toml`) inside a subfolder of the library
is a model named after its file (or subfolder). `Library.sync()` re-reads the folder, compiles what
changed (by file content), and swaps in the new specs at once; an invalid edit keeps the last good
spec serving and records the error with its position. The scheduler compares each request's spec
with the loaded one, so a template/system/sampling change applies without a reload and a weights
or context change loads beside the old runner and drains it.

A definition whose FROM names a registry model the store lacks is `pulling`: given `Bases`, the
library has them pulled in the background (progress and failures on the entry, the last good
spec still serving), and when the base arrives it syncs again (`resync`, else in the pull's
thread), which compiles the definition at last.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

from corral.compiler.compile import CompileOptions, compile_definition
from corral.compiler.errors import CompileError, UnknownModelError
from corral.compiler.resolve import ModelResolver
from corral.compiler.spec import RuntimeSpec
from corral.dsl import DefinitionError, Diagnostic, ModelDefinition, load
from corral.errors import CorralError
from corral.sources.bases import Bases, Download, PullState, registry_name
from corral.store import names
from corral.store.errors import InvalidNameError, ModelNotFoundError

log = logging.getLogger(__name__)

State = Literal["ok", "loading", "pulling", "error"]
Action = Literal["create", "update-spec", "update-reload", "delete", "unchanged", "error", "pull"]

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
    base: str | None = None  # the registry model FROM names, while the store lacks it
    pull: PullState | None = None  # how its pull stands (set by Library.entries)
    definition: ModelDefinition | None = None  # what `spec` was compiled from (the served version's Modelfile)

    @property
    def digest(self) -> str | None:
        return self.spec.digest if self.spec else None


@dataclass(frozen=True)
class Change:
    name: str
    action: Action
    path: str
    detail: str = ""
    download: Download | None = None  # action "pull": what it would download (dry runs measure it)


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

    def __init__(self, root: Path, options: CompileOptions, resolver: ModelResolver, bases: Bases | None = None):
        self.root = root
        self.options = options
        self.resolver = resolver
        self.bases = bases  # None: a missing base is an error, as without a registry
        self.resync: Callable[[], None] | None = None  # the server's way to sync when a base arrives
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        if bases is not None:
            bases.on_ready = self._base_arrived

    def close(self) -> None:
        """Cancel the background pulls (what they downloaded stays in the store)."""
        if self.bases is not None:
            self.bases.close()

    def _base_arrived(self, _name: str) -> None:
        resync = self.resync
        if resync is not None:
            resync()
        else:
            self.sync()

    # -- lookups --------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.name)
        return [self._with_pull(e) for e in entries]

    def _with_pull(self, e: Entry) -> Entry:
        if e.base is None or self.bases is None:
            return e
        pull = self.bases.state(e.base) or PullState(e.base, "pulling")
        if pull.state == "error":
            problem = Problem(f"pulling {e.base}: {pull.error}", e.path, None, None, pull.hint)
            return replace(e, state="error", problem=problem, pull=pull)
        return replace(e, state="pulling", pull=pull)

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

    def entry(self, name: str) -> Entry | None:
        """The entry of model `name` (its state, last good spec and problem), if the library has one."""
        with self._lock:
            entry = self._entries.get(self._key(name))
        return self._with_pull(entry) if entry is not None else None

    def has(self, name: str) -> bool:
        with self._lock:
            entry = self._entries.get(self._key(name))
        return entry is not None and entry.spec is not None

    # -- reconciling ----------------------------------------------------------------------------
    def plan(self, root: Path | None = None, *, measure: bool = False) -> tuple[list[Change], dict[str, Entry]]:
        """Compile what changed in `root` (default: this library's folder) against what serves now.

        `measure` asks the registry what each missing base would download (`corral apply --dry-run`)."""
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
            same = old is not None and old.source_hash == f.content_hash and old.path == str(f.path)
            if same and old.base is None:
                new[lower] = old
                changes.append(Change(f.name, "unchanged", str(f.path)))
                continue
            parsed = None
            try:
                parsed = load(f.path)
                spec = compile_definition(parsed.definition, name=f.name, base_dir=f.path.parent.resolve(),
                                          resolver=self.resolver, options=self.options, source=str(f.path))
            except UnknownModelError as e:
                base = registry_name(parsed.definition.from_.value) if parsed and self.bases else None
                if base is None:
                    problem = Problem.of(e, f.path)
                    new[lower] = Entry(f.name, str(f.path), "error", old.spec if old else None, problem, now,
                                       f.content_hash, definition=old.definition if old else None)
                    changes.append(Change(f.name, "error", str(f.path), problem.render()))
                    continue
                assert self.bases is not None
                changed_at = old.changed_at if same and old is not None else now
                new[lower] = Entry(f.name, str(f.path), "pulling", old.spec if old else None, None, changed_at,
                                   f.content_hash, base=base, definition=old.definition if old else None)
                download = self.bases.measure(base) if measure else None
                if not same or measure:
                    changes.append(Change(f.name, "pull", str(f.path), _pull_detail(base, download), download))
                else:
                    changes.append(Change(f.name, "unchanged", str(f.path)))
                continue
            except CorralError as e:
                problem = Problem.of(e, f.path)
                new[lower] = Entry(f.name, str(f.path), "error", old.spec if old else None, problem, now, f.content_hash,
                                   definition=old.definition if old else None)
                changes.append(Change(f.name, "error", str(f.path), problem.render()))
                continue
            new[lower] = Entry(f.name, str(f.path), "ok", spec, None, now, f.content_hash,
                               definition=parsed.definition)
            changes.append(Change(f.name, _action(old, spec), str(f.path)))
        for lower, old in current.items():
            if lower not in new:
                changes.append(Change(old.name, "delete", old.path))
        return changes, new

    def sync(self, root: Path | None = None) -> list[Change]:
        """Plan and apply in one step; returns what changed (unchanged models left out).

        Missing bases are pulled in the background; an edited definition that waits for one
        cuts short the wait before its next try."""
        started = time.perf_counter()
        with self._sync_lock:
            with self._lock:
                before = dict(self._entries)
            changes, entries = self.plan(root)
            with self._lock:
                if root is not None:
                    self.root = root
                self._entries = entries
            if self.bases is not None:
                wanted = {e.base for e in entries.values() if e.base is not None}
                self.bases.keep(wanted)
                for lower, e in entries.items():
                    if e.base is not None:
                        old = before.get(lower)
                        self.bases.want(e.base, now=old is not None and old.source_hash != e.source_hash)
        real = [c for c in changes if c.action != "unchanged"]
        for c in real:
            if c.action == "error":
                log.error("library: %s", c.detail)
            else:
                log.info("library: %s %s (%s)", c.action, c.name, c.path)
        if real:
            log.info("library: %d change(s) applied in %.0f ms", len(real), (time.perf_counter() - started) * 1e3)
        return real


def _pull_detail(base: str, download: Download | None) -> str:
    if download is None:
        return f"FROM {base}: not in the store, pulled in the background"
    if download.bytes is None:
        return f"FROM {base}: would be pulled, but the registry cannot say how much: {download.error}"
    return f"FROM {base}: would download {human_bytes(download.bytes)} ({download.layers} layers)"


def human_bytes(n: int) -> str:
    """Decimal units, as Ollama prints sizes: 1.3 GB, 815 MB, 12 KB."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


def _action(old: Entry | None, spec: RuntimeSpec) -> Action:
    if old is None or old.spec is None:
        return "create"
    if old.spec.digest == spec.digest:
        return "unchanged"
    return "update-spec" if old.spec.load_digest == spec.load_digest else "update-reload"


__all__ = ["Change", "Entry", "Library", "Problem", "discover", "model_name_of"]
