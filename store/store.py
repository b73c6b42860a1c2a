"""The content-addressed model store, laid out exactly as Ollama lays out its models folder.

    <root>/blobs/sha256-<hex>                             content-addressed files, mode 0644
    <root>/manifests/<host>/<namespace>/<model>/<tag>     Docker v2 manifest JSON, no extension
    <root>/blobs/sha256-<hex>-partial[.json]              a pull under way (corral.registry); prune
                                                          keeps it until it is a week without moving

so a store can be pointed at an existing `~/.ollama/models` and read as it is. Every write goes to
a temp file in the destination's own folder and is renamed into place only once it is complete and
verified, so a failure (a digest mismatch, a full disk, an interrupted stream) leaves the store as
it was. Manifests are written as Go's encoding/json writes them, so the same manifest gets the same
digest in Corral and in Ollama.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from corral.store.errors import BlobNotFoundError, DigestMismatchError, InvalidManifestError, ModelNotFoundError
from corral.store.files import atomic_write
from corral.store.manifest import Layer, Manifest, MediaType
from corral.store.names import Digest, ModelName, is_blob_file_name, parse, parse_digest

__all__ = ["Layer", "Manifest", "MediaType", "ModelEntry", "Progress", "Store"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""`progress(done_bytes, total_bytes)`, called as a large blob is hashed and copied."""

CHUNK = 1 << 20
# One lock per store folder for what changes manifests (write, copy, delete): a delete that lists
# the manifests and removes a model's emptied folders must not run beside a write creating one
# there. Within one process (the server's handler threads); readers need no lock.
_MUTATIONS: dict[Path, threading.RLock] = {}
_MUTATIONS_GUARD = threading.Lock()


def _mutation_lock(root: Path) -> threading.RLock:
    with _MUTATIONS_GUARD:
        return _MUTATIONS.setdefault(root.resolve(), threading.RLock())


_TEMP_PREFIX = ".corral-tmp-"  # a leading '.' can start no valid name part, so listings skip temps
_ANY_DIGEST = re.compile(rb"sha256[:-]([0-9a-fA-F]{64})")
_PARTIAL = re.compile(r"sha256-[0-9a-f]{64}-partial(\.json)?")  # a download in progress (corral.registry)
PARTIAL_GRACE = 7 * 24 * 3600.0  # seconds a partial download is kept without moving


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model as `list_models` (and `/api/tags`) shows it."""

    name: str  # display_shortest(), e.g. "llama3.2:latest"
    model_name: ModelName  # the parts, in the case they are stored
    digest: str  # sha256 hex of the manifest file's bytes, no prefix
    size: int  # config + layers, in bytes
    modified_at: datetime  # the manifest file's mtime, UTC
    manifest: Manifest


def _label(name: ModelName | str) -> str:
    return name if isinstance(name, str) else name.display_shortest()


def _as_name(name: ModelName | str) -> ModelName:
    return parse(name) if isinstance(name, str) else name


class Store:
    """Blobs and manifests under one root folder. Holds no open files and no cache."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- blobs -----------------------------------------------------------------------------------

    def blob_path(self, digest: Digest | str, *, must_exist: bool = False) -> Path:
        """Where a blob lives (`blobs/sha256-<hex>`); BlobNotFoundError if `must_exist` and it doesn't."""
        d = parse_digest(digest)
        path = self.blobs_dir / d.file_name
        if must_exist and not path.is_file():
            raise BlobNotFoundError(str(d))
        return path

    def has_blob(self, digest: Digest | str) -> bool:
        return self.blob_path(digest).is_file()

    def put_blob_bytes(self, data: bytes) -> Digest:
        """Store `data` and return its digest (a blob already present is left as it is)."""
        digest = Digest.of_bytes(data)
        if not self.has_blob(digest):
            self._write_blob(digest, [data])
        return digest

    def put_blob_stream(self, chunks: Iterable[bytes], expected_digest: Digest | str) -> Digest:
        """Store a blob that arrives in pieces (an upload, a download), checking it against its digest.

        The digest is computed as the chunks are written. On a mismatch it raises
        DigestMismatchError; then, as after any failure (the chunks' iterator raising, say), the
        temp file is removed and the store is unchanged. If the blob
        is already stored, the chunks are not read at all (as Ollama's POST /api/blobs answers 200
        without reading the body).
        """
        expected = parse_digest(expected_digest)
        if not self.has_blob(expected):
            self._write_blob(expected, chunks)
        return expected

    def put_blob_file(self, path: Path, progress: Progress | None = None) -> Digest:
        """Copy a file into the store and return its digest.

        Two passes: one hashes the file, and only when the blob is new a second one copies it into
        a temp file while hashing again, so that a file changed in between is caught (as a
        DigestMismatchError) instead of stored under the wrong address. `progress` runs from 0 to
        twice the file's size across both passes; for a blob already stored it jumps to the end.
        """
        path = Path(path)
        size = path.stat().st_size
        total = 2 * size
        report: Progress = progress or (lambda done, total: None)
        report(0, total)
        hasher = hashlib.sha256()
        for done, chunk in _read_chunks(path):
            hasher.update(chunk)
            report(done, total)
        digest = Digest(hasher.hexdigest())
        if self.has_blob(digest):
            report(total, total)
            return digest

        def copying() -> Iterator[bytes]:
            for done, chunk in _read_chunks(path):
                yield chunk
                report(size + done, total)

        self._write_blob(digest, copying())
        return digest

    def _write_blob(self, expected: Digest, chunks: Iterable[bytes]) -> None:
        """Write chunks to a temp file in blobs/, verify the digest, rename into place; or leave nothing."""
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()

        def write(f) -> None:
            for chunk in chunks:
                hasher.update(chunk)
                f.write(chunk)
            got = Digest(hasher.hexdigest())
            if got != expected:
                raise DigestMismatchError(str(expected), str(got))

        atomic_write(self.blob_path(expected), write, prefix=_TEMP_PREFIX)

    # -- manifests ---------------------------------------------------------------------------------

    def _find_manifest(self, name: ModelName) -> Path | None:
        """The manifest file for `name`, matching each folder case-insensitively as Ollama does.

        The exact spelling wins; otherwise the first case-insensitive match in sorted order.
        """
        exact = self.manifests_dir.joinpath(*name.filepath_parts())
        if exact.is_file():
            return exact
        path = self._resolve_case(name)
        return path if path.is_file() else None

    def _resolve_case(self, name: ModelName) -> Path:
        """`name`'s manifest path, reusing the spelling of each folder (and file) that already exists."""
        path = self.manifests_dir
        for part in name.filepath_parts():
            candidate = path / part
            if not candidate.exists() and path.is_dir():
                try:
                    matches = sorted(p for p in path.iterdir() if p.name.lower() == part.lower())
                except FileNotFoundError:  # a concurrent delete removed the emptied folder
                    matches = []
                candidate = matches[0] if matches else candidate
            path = candidate
        return path

    def has_model(self, name: ModelName | str) -> bool:
        return self._find_manifest(_as_name(name)) is not None

    def write_manifest(self, name: ModelName | str, manifest: Manifest) -> str:
        """Write (or replace) the manifest for `name` atomically; return its digest (sha256 hex of the bytes).

        Every blob the manifest names must already be stored with the size the manifest gives;
        otherwise BlobNotFoundError or InvalidManifestError, and nothing is written. A name that
        exists in another case is replaced in place, keeping the stored spelling.
        """
        model = _as_name(name)
        for layer in manifest.all_layers():
            blob = self.blob_path(layer.digest, must_exist=True)
            if (actual := blob.stat().st_size) != layer.size:
                reason = f"layer {layer.digest} says {layer.size} bytes but the blob holds {actual}"
                raise InvalidManifestError(_label(name), reason)
        data = manifest.to_bytes()
        self._write_manifest_bytes(model, data)
        return Digest.of_bytes(data).hex

    def _write_manifest_bytes(self, name: ModelName, data: bytes) -> None:
        with _mutation_lock(self.root):
            self._write_manifest_locked(name, data)

    def _write_manifest_locked(self, name: ModelName, data: bytes) -> None:
        target = self._resolve_case(name)
        # The folders this write creates, deepest first, so a failure can take them away again.
        created = [p for p in (target.parent, *target.parent.parents) if p.is_relative_to(self.root) and not p.exists()]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda f: f.write(data), prefix=_TEMP_PREFIX)
        except BaseException:
            _remove_empty_dirs(created)
            raise

    def read_manifest(self, name: ModelName | str) -> Manifest:
        """The manifest for `name`; ModelNotFoundError if there is none."""
        return self._load(name)[1]

    def get(self, name: ModelName | str) -> ModelEntry:
        """One model's entry, as `list_models` would show it."""
        path, manifest, data = self._load(name)
        try:
            return self._entry(path, manifest, data)
        except FileNotFoundError:  # deleted between the read and the stat
            raise ModelNotFoundError(_label(name)) from None

    def _load(self, name: ModelName | str) -> tuple[Path, Manifest, bytes]:
        path = self._find_manifest(_as_name(name))
        if path is None:
            raise ModelNotFoundError(_label(name))
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a concurrent delete removed it after it was found
            raise ModelNotFoundError(_label(name)) from None
        return path, Manifest.from_bytes(data, name=_label(name)), data

    def _entry(self, path: Path, manifest: Manifest, data: bytes) -> ModelEntry:
        parts = path.relative_to(self.manifests_dir).parts
        model_name = ModelName(host=parts[0], namespace=parts[1], model=parts[2], tag=parts[3])
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
        return ModelEntry(
            name=model_name.display_shortest(),
            model_name=model_name,
            digest=Digest.of_bytes(data).hex,
            size=manifest.size,
            modified_at=mtime,
            manifest=manifest,
        )

    def _manifest_files(self) -> Iterator[tuple[ModelName, Path]]:
        """Every file exactly four levels below manifests/ whose path is a valid name (Ollama's glob)."""
        if not self.manifests_dir.is_dir():
            return
        for path in sorted(_four_deep(self.manifests_dir)):
            if not path.is_file():
                continue
            host, namespace, model, tag = path.relative_to(self.manifests_dir).parts
            name = ModelName(host=host, namespace=namespace, model=model, tag=tag)
            if name.is_valid():
                yield name, path
            elif not tag.startswith(_TEMP_PREFIX):
                log.warning("skipping %s: not a valid model name", path)

    def list_models(self) -> list[ModelEntry]:
        """Every readable model, newest first (then by name). Unreadable manifests are logged and skipped."""
        entries: list[ModelEntry] = []
        for name, path in self._manifest_files():
            try:
                data = path.read_bytes()
                entries.append(self._entry(path, Manifest.from_bytes(data, name=str(name)), data))
            except (OSError, InvalidManifestError) as e:
                log.warning("skipping %s: %s", path, e)
        entries.sort(key=lambda e: e.name)
        entries.sort(key=lambda e: e.modified_at, reverse=True)
        return entries

    def copy(self, src: ModelName | str, dst: ModelName | str) -> None:
        """Make `dst` another name for `src`: the manifest bytes are copied, the blobs are shared."""
        target = _as_name(dst)
        _, _, data = self._load(src)
        self._write_manifest_bytes(target, data)

    # -- removal -----------------------------------------------------------------------------------

    def _referenced(self, skip: Path | None = None) -> set[Digest]:
        """Digests named by every manifest but `skip`.

        A manifest that cannot be parsed still protects every digest written anywhere in its bytes:
        deleting a blob that a damaged manifest might need would lose data for good.
        """
        used: set[Digest] = set()
        for _, path in self._manifest_files():
            if skip is not None and path == skip:
                continue
            data = path.read_bytes()
            try:
                used.update(layer.digest for layer in Manifest.from_bytes(data).all_layers())
            except InvalidManifestError:
                used.update(Digest(m.group(1).decode().lower()) for m in _ANY_DIGEST.finditer(data))
        return used

    def delete(self, name: ModelName | str) -> list[Digest]:
        """Remove a model's manifest, its now-empty folders, and the blobs no other manifest uses
        (see `_delete_locked`)."""
        with _mutation_lock(self.root):
            return self._delete_locked(name)

    def _delete_locked(self, name: ModelName | str) -> list[Digest]:
        """Remove a model's manifest, its now-empty folders, and the blobs no other manifest uses.

        Returns the digests of the blobs removed. Everything is worked out before the first file is
        removed, so a failure part-way (an unreadable folder) leaves the store unchanged. A damaged
        manifest can still be deleted; its blobs are then left for `prune`.
        """
        path = self._find_manifest(_as_name(name))
        if path is None:
            raise ModelNotFoundError(_label(name))
        try:
            layers = Manifest.from_bytes(path.read_bytes(), name=_label(name)).all_layers()
        except InvalidManifestError as e:
            log.warning("deleting %s without its blobs: %s", path, e)
            layers = ()
        except FileNotFoundError:  # a concurrent delete got there first
            raise ModelNotFoundError(_label(name)) from None
        keep = self._referenced(skip=path)
        doomed = [d for d in dict.fromkeys(layer.digest for layer in layers) if d not in keep]
        try:
            path.unlink()
        except FileNotFoundError:
            raise ModelNotFoundError(_label(name)) from None
        _remove_empty_dirs([path.parent, *path.parent.parents], stop=self.manifests_dir)
        removed = []
        for digest in doomed:
            try:
                self.blob_path(digest).unlink()
                removed.append(digest)
            except FileNotFoundError:
                pass
        return removed

    def prune(self, grace_seconds: float = 0.0, partial_seconds: float = PARTIAL_GRACE) -> list[Path]:
        """Remove unreferenced blobs, leftover temp files and empty manifest folders; return what went.

        Files modified within `grace_seconds` are kept, so a blob uploaded for a manifest that is
        about to be written survives (Ollama's startup prune uses an hour). A paused download (a
        registry pull's `sha256-<hex>-partial` file and its `-partial.json` sidecar) is kept until
        it has not moved for `partial_seconds` (a week by default), so a prune at startup never
        throws away what the next pull of that model would resume from; Ollama's prune removes
        partial files, Corral's only abandoned ones.
        """
        removed: list[Path] = []
        now = datetime.now(timezone.utc).timestamp()
        keep = {d.file_name for d in self._referenced()}
        if self.blobs_dir.is_dir():
            for path in sorted(self.blobs_dir.iterdir()):
                if not path.is_file() or path.name in keep:
                    continue
                age = now - path.stat().st_mtime
                if age < grace_seconds or (_PARTIAL.fullmatch(path.name) and age < partial_seconds):
                    continue
                if not is_blob_file_name(path.name):
                    log.info("removing leftover file %s", path)
                path.unlink(missing_ok=True)
                removed.append(path)
        if self.manifests_dir.is_dir():
            for path in sorted(self.manifests_dir.rglob("*"), reverse=True):
                if path.is_file() and path.name.startswith(_TEMP_PREFIX):
                    if now - path.stat().st_mtime >= grace_seconds:
                        path.unlink(missing_ok=True)
                        removed.append(path)
                elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                    path.rmdir()
                    removed.append(path)
        return removed


# -- file helpers ------------------------------------------------------------------------------------


def _four_deep(root: Path) -> list[Path]:
    """The paths four levels below `root` (glob's `*/*/*/*`), skipping folders that vanish while
    they are read: a concurrent delete removes a model's emptied folders, and pathlib's glob would
    raise FileNotFoundError for them (a 500 for whoever was listing or deleting beside it)."""
    level = [root]
    for _ in range(4):
        below: list[Path] = []
        for folder in level:
            try:
                below.extend(folder.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                continue
        level = below
    return level


def _read_chunks(path: Path) -> Iterator[tuple[int, bytes]]:
    """`(bytes read so far, chunk)` through a file."""
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            done += len(chunk)
            yield done, chunk


def _remove_empty_dirs(dirs: Iterable[Path], stop: Path | None = None) -> None:
    """rmdir each folder in order while it is empty, stopping at `stop` (kept) or the first non-empty one."""
    for d in dirs:
        if stop is not None and d == stop:
            return
        try:
            d.rmdir()
        except OSError:  # not empty, or already gone: either way the folders above stay
            return
