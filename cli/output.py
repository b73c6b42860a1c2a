"""Where the CLI writes: results to stdout, diagnostics to stderr (never `print` for logs)."""

from __future__ import annotations

import sys
from typing import Iterable

from corral.dsl.errors import Diagnostic


def out(text: str) -> None:
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def diagnostics(items: Iterable[Diagnostic]) -> None:
    for d in items:
        err(d.render())
