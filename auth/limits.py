"""Per-key budgets (requests and tokens per minute) and usage counters.

Each limit is a token bucket that holds a minute's allowance and refills continuously at
allowance/60 per second, so a key may burst its whole minute and then goes at the steady rate.
A request takes one request token before it runs; the tokens it used (prompt plus generated) are
taken when it finishes, since only then are they known. The token bucket may so go below zero: the
request that overspent finishes, and the next one waits until the bucket is above zero again.
The clock is a parameter (`time.monotonic` by default), so tests drive it by hand.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from corral.auth.errors import RateLimitedError

Clock = Callable[[], float]


@dataclass
class Bucket:
    """A token bucket of `per_minute` capacity, full when made."""

    per_minute: int
    level: float = math.nan
    at: float = math.nan

    def refill(self, now: float) -> None:
        if math.isnan(self.level):
            self.level, self.at = float(self.per_minute), now
            return
        self.level = min(float(self.per_minute), self.level + (now - self.at) * self.per_minute / 60.0)
        self.at = now

    def wait(self, need: float) -> float:
        """Seconds until the level reaches `need` (0: now)."""
        return max(0.0, (need - self.level) * 60.0 / self.per_minute)


def retry_after(seconds: float) -> int:
    """Whole seconds for Retry-After: rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


@dataclass
class Usage:
    """What one key has used, counted over the server's life (and kept in the home between runs)."""

    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens}


@dataclass
class Limiter:
    """The budgets and the usage of every key, by key name."""

    clock: Clock = time.monotonic
    _requests: dict[str, Bucket] = field(default_factory=dict)
    _tokens: dict[str, Bucket] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)

    def _bucket(self, table: dict[str, Bucket], name: str, per_minute: int) -> Bucket:
        bucket = table.get(name)
        if bucket is None or bucket.per_minute != per_minute:  # a changed limit starts a fresh minute
            bucket = table[name] = Bucket(per_minute)
        bucket.refill(self.clock())
        return bucket

    def admit(self, name: str, rpm: int | None, tpm: int | None) -> None:
        """Let one request of key `name` in, or raise RateLimitedError saying when to come back."""
        requests = self._bucket(self._requests, name, rpm) if rpm else None
        tokens = self._bucket(self._tokens, name, tpm) if tpm else None
        if tokens is not None and tokens.level <= 0:
            raise RateLimitedError(f"API key {name!r} used its {tpm} tokens per minute",
                                   retry_after(tokens.wait(0.0)))
        if requests is not None and requests.level < 1:
            raise RateLimitedError(f"API key {name!r} made its {rpm} requests per minute",
                                   retry_after(requests.wait(1.0)))
        if requests is not None:
            requests.level -= 1
        self.usage.setdefault(name, Usage()).requests += 1

    def spend(self, name: str, tpm: int | None, prompt_tokens: int, generated_tokens: int) -> None:
        """Count a finished request's tokens against key `name`'s budget and usage."""
        usage = self.usage.setdefault(name, Usage())
        usage.prompt_tokens += prompt_tokens
        usage.generated_tokens += generated_tokens
        if tpm:
            self._bucket(self._tokens, name, tpm).level -= prompt_tokens + generated_tokens
