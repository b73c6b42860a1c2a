"""API keys: how they are made, stored (as hashes only) and found again.

A key is `corral_` and 43 URL-safe characters (32 random bytes): high-entropy enough that a plain
sha256 is a safe hash, and recognisable in a leaked file or a log. The key file
`<home>/keys.json` holds one record per key name with the key's `sha256:<hex>`; it is written to a
temporary file with mode 0600 and renamed over the old one, so a reader never sees half of it.

`CORRAL_API_KEYS` (simple setups, no file): comma-separated entries, each `NAME:KEY:SCOPE`,
`NAME:KEY` (admin) or a bare `KEY` (admin, named `env-N` by its position); they have no model or
rate limits. Lookup hashes the presented key once and compares it with every record's hash by
`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from corral.auth.errors import KeyFileError
from corral.auth.scopes import Scope

KEY_PREFIX = "corral_"
KEYS_FILE = "keys.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def new_key() -> str:
    """A fresh random key: `corral_` + 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """`sha256:<hex>` of a key: what the key file keeps instead of the key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str) -> str:
    """A key name: letters, digits, `_ . -`, up to 64 characters, starting with a letter or digit."""
    if not _NAME.match(name):
        raise KeyFileError(f"{name[:80]!r} is not a key name",
                           "use letters, digits, '_', '.' and '-' (up to 64, starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: its name, rights and limits, and the hash of the key itself."""

    name: str
    hash: str
    scope: Scope = Scope.INFERENCE
    models: tuple[str, ...] = ()  # name patterns (`*` wildcards); empty: every model
    rpm: int | None = None  # requests per minute; None: unlimited
    tpm: int | None = None  # prompt + generated tokens per minute; None: unlimited
    created: str = ""  # RFC 3339, UTC
    source: str = "file"  # "file" or "env" (CORRAL_API_KEYS): env keys cannot be revoked by the CLI

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["scope"] = self.scope.value
        out["models"] = list(self.models)
        del out["source"]
        return out

    @classmethod
    def from_json(cls, item: Any) -> KeyRecord:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                not isinstance(item.get("hash"), str):
            raise ValueError("a key record needs a name and a hash")
        models = item.get("models") or []
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ValueError(f"key {item['name']!r}: models must be a list of patterns")
        return cls(name=item["name"], hash=item["hash"], scope=Scope(item.get("scope", "inference")),
                   models=tuple(models), rpm=_limit(item.get("rpm")), tpm=_limit(item.get("tpm")),
                   created=str(item.get("created", "")))


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"a limit must be a whole number of at least 1, not {value!r}")
    return value


def new_record(name: str, key: str, scope: Scope, models: Iterable[str] = (), rpm: int | None = None,
               tpm: int | None = None) -> KeyRecord:
    """The record of a key just made (created now)."""
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return KeyRecord(check_name(name), key_hash(key), scope, tuple(models), _limit(rpm), _limit(tpm), created)


class KeyFile:
    """`<home>/keys.json`: read whole, written whole (atomically, mode 0600)."""

    def __init__(self, home: Path):
        self.path = Path(home) / KEYS_FILE

    def stamp(self) -> tuple[int, int, int] | None:
        """What changes when the file is rewritten (mtime, size, inode); None when there is no file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def read(self) -> list[KeyRecord]:
        """Every record; no file means no keys."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as e:
            raise KeyFileError(f"cannot read the key file {KEYS_FILE}: {e.strerror}") from None
        try:
            data = json.loads(text)
            items = data["keys"] if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise ValueError("it has no 'keys' list")
            return [KeyRecord.from_json(item) for item in items]
        except (ValueError, KeyError, TypeError) as e:
            raise KeyFileError(f"the key file {KEYS_FILE} is malformed: {e}",
                               "fix it, or remove it and create the keys again") from None

    def write(self, records: Iterable[KeyRecord]) -> None:
        """Replace the file with `records`, atomically, readable by its owner only."""
        text = json.dumps({"version": 1, "keys": [r.to_json() for r in records]}, indent=2) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, name: str, scope: Scope, models: Iterable[str] = (), rpm: int | None = None,
            tpm: int | None = None) -> tuple[str, KeyRecord]:
        """Make a key named `name`, store its record; returns the key (the only time it exists) and the record."""
        records = self.read()
        if any(r.name == name for r in records):
            raise KeyFileError(f"a key named {name!r} exists already", f"revoke it first: corral keys revoke {name}")
        key = new_key()
        record = new_record(name, key, scope, models, rpm, tpm)
        self.write([*records, record])
        return key, record

    def remove(self, name: str) -> KeyRecord:
        """Delete the record named `name`; returns it."""
        records = self.read()
        found = [r for r in records if r.name == name]
        if not found:
            raise KeyFileError(f"no key named {name!r}", "see the names with: corral keys list")
        self.write([r for r in records if r.name != name])
        return found[0]


def parse_env_keys(text: str | None) -> list[KeyRecord]:
    """The records of `CORRAL_API_KEYS` (see the module docstring); an error names the entry, never its key."""
    records: list[KeyRecord] = []
    entries = [e.strip() for e in (text or "").split(",") if e.strip()]
    for index, entry in enumerate(entries, start=1):
        parts = entry.split(":")
        if len(parts) == 1:
            name, key, scope = f"env-{index}", parts[0], Scope.ADMIN.value
        elif len(parts) == 2:
            (name, key), scope = parts, Scope.ADMIN.value
        elif len(parts) == 3:
            name, key, scope = parts
        else:
            raise KeyFileError(f"entry {index} of CORRAL_API_KEYS is not NAME:KEY[:SCOPE] or KEY")
        if scope not in Scope._value2member_map_ or not key or not _NAME.match(name):
            raise KeyFileError(f"entry {index} of CORRAL_API_KEYS is not NAME:KEY[:SCOPE] or KEY",
                               "SCOPE is inference or admin; NAME is letters, digits, '_', '.' and '-'")
        records.append(KeyRecord(name, key_hash(key), Scope(scope), source="env"))
    return records


@dataclass
class KeyRing:
    """The keys in force: the key file's (reloaded when it changes) and CORRAL_API_KEYS'."""

    file: KeyFile
    env: list[KeyRecord] = field(default_factory=list)
    _stamp: tuple[int, int, int] | None = None
    _records: list[KeyRecord] = field(default_factory=list)

    def records(self) -> list[KeyRecord]:
        """Every key now; the file is read again only when its mtime, size or inode changed."""
        stamp = self.file.stamp()
        if stamp != self._stamp:
            self._records = self.file.read() if stamp is not None else []
            self._stamp = stamp
        names = {r.name for r in self.env}
        return [*self.env, *(r for r in self._records if r.name not in names)]

    def find(self, key: str) -> KeyRecord | None:
        """The record whose hash is the presented key's, compared in constant time with every record."""
        presented = key_hash(key).encode()
        found = None
        for record in self.records():
            if hmac.compare_digest(presented, record.hash.encode()):
                found = record
        return found

