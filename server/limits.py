"""Limits on what a request may ask of the server: body and blob sizes, read timeouts, JSON nesting,
and the ranges of every value that becomes an index, a count or an allocation.

The sizes and timeouts are settings (CORRAL_MAX_REQUEST_SIZE, CORRAL_MAX_BLOB_SIZE,
CORRAL_READ_TIMEOUT), handed to Sanic by `configure`. The rest are fixed here: generous for any
real use, small enough that no request can make llama.cpp allocate or loop without bound. The
request schemas (schemas.py, openai_schemas.py) check them, so a request over a limit is a 400
naming the field before anything below the server sees it.
"""

from __future__ import annotations

import re

from sanic import Request, Sanic

from corral.config.settings import Settings
from corral.server.errors import BadRequestError

MAX_JSON_DEPTH = 64
"""Nesting of arrays and objects in a request body (a tool's JSON schema needs a dozen at most)."""

MAX_TOKENS = 2**24
"""The most tokens any count may name (num_ctx, num_predict, num_keep, max_tokens...)."""

MAX_NAME_LENGTH = 1024  # a model name's host, namespace, model and tag together
MAX_STOPS = 64
MAX_STOP_LENGTH = 4096
MAX_MESSAGES = 65_536
MAX_TOOLS = 1024
MAX_INPUTS = 65_536  # texts in one embedding request
MAX_CONTEXT_TOKENS = MAX_TOKENS  # the `context` list of /api/generate
MAX_DIMENSIONS = 65_536
MAX_CHOICES = 128  # OpenAI's `n`

OPTION_RANGES: dict[str, tuple[int, int]] = {
    "num_ctx": (1, MAX_TOKENS),
    "num_batch": (1, 65_536),
    "num_gpu": (-1, 10_000),
    "num_thread": (0, 1024),
    "num_keep": (-1, MAX_TOKENS),
    "num_predict": (-2, MAX_TOKENS),
    "repeat_last_n": (-1, MAX_TOKENS),
    "top_k": (0, 1_000_000),
    "seed": (-1, 2**32 - 1),  # llama.cpp keeps a 32-bit seed
}
"""Request-time bounds of the integer options, tighter than what a definition may set."""


def configure(app: Sanic, settings: Settings) -> None:
    """Hand the size and timeout settings to Sanic, and refuse deep bodies before anything parses them."""
    app.config.REQUEST_MAX_SIZE = settings.max_request_size
    app.config.REQUEST_TIMEOUT = settings.read_timeout
    app.register_middleware(_check_depth, "request")


DEPTH_MESSAGE = f"the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


async def _check_depth(request: Request) -> None:
    # Before any middleware decodes the body (a key check reads its model): Python's decoder
    # recurses, and a body of 100,000 brackets would end in RecursionError, a 500.
    if request.body and bracket_depth(request.body) > MAX_JSON_DEPTH:
        raise BadRequestError(DEPTH_MESSAGE)


def bracket_depth(raw: bytes) -> int:
    """How deeply `[` and `{` nest in raw JSON, strings skipped (malformed input gives some number)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if match.group(0) in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        else:
            depth -= 1
    return deepest


def option_problem(name: str, value: object) -> str | None:
    """Why an option's (already typed) value is refused here, or None."""
    if name == "stop" and isinstance(value, tuple):
        if len(value) > MAX_STOPS:
            return f"at most {MAX_STOPS} stop sequences, got {len(value)}"
        longest = max((len(s) for s in value), default=0)
        if longest > MAX_STOP_LENGTH:
            return f"a stop sequence may be {MAX_STOP_LENGTH} characters at most, got {longest}"
        return None
    bounds = OPTION_RANGES.get(name)
    if bounds is not None and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
        return f"{name} must be between {bounds[0]} and {bounds[1]}, got {value}"
    return None


def json_depth(value: object) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (a scalar: 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                return deepest  # far enough to refuse: no need to walk the rest
        stack.extend((child, depth) for child in children)
    return deepest
