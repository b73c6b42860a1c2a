"""Writing a file so that it is whole or absent, and a file's sha256: the store's two file jobs,
also used by the CLI for the definitions it rewrites and the weights it downloads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write(target: Path, write: Callable[[BinaryIO], object], *, mode: int = 0o644,
                 prefix: str | None = None, suffix: str = "") -> None:
    """Run `write(file)` on a temp file beside `target`, then fsync it and rename it to `target`.

    On any exception (KeyboardInterrupt included) the temp file is removed and `target` is
    untouched. The temp file is named `prefix` (default `.<target name>.`), random letters, then
    `suffix`, so that folder watchers and clean-ups can tell it from a finished file; `mode` is the
    finished file's permissions (mkstemp makes 0600).
    """
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}." if prefix is None else prefix,
                                suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
