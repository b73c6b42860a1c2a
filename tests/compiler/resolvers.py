"""Resolvers for compiler tests: what the store would offer the compiler, without a store."""

from __future__ import annotations

from corral.compiler.resolve import ParentModel


class Stored:
    """A resolver holding one stored model, as the runtime's store would offer it."""

    def __init__(self, base: ParentModel):
        self.base = base

    def model(self, name: str):
        return self.base if name == self.base.name else None

    def blob(self, digest: str):
        return None
