"""Usage per key, kept in `<home>/keys-usage.json` so `corral keys list` can show it.

The server is the one writer: it loads the file when it starts, adds to the counters as requests
finish, and writes the whole file (atomically) at most once a second and when it stops. The
CLI only reads it. A missing or unreadable file is no usage yet.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from corral.auth.limits import Usage

USAGE_FILE = "keys-usage.json"


class UsageFile:
    def __init__(self, home: Path):
        self.path = Path(home) / USAGE_FILE

    def read(self) -> dict[str, Usage]:
        """Usage by key name; {} when there is none (or the file cannot be read)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        out: dict[str, Usage] = {}
        if isinstance(data, dict):
            for name, item in data.items():
                if isinstance(item, dict):
                    out[name] = Usage(*(int(item.get(k, 0)) if isinstance(item.get(k, 0), int) else 0
                                        for k in ("requests", "prompt_tokens", "generated_tokens")))
        return out

    def write(self, usage: dict[str, Usage]) -> None:
        """Replace the file with `usage`, atomically, mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".usage-", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({name: u.to_json() for name, u in sorted(usage.items())}, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
