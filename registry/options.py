"""TransferOptions: how pulls and pushes cut blobs up, how many parts run at once, and how they retry."""

from __future__ import annotations

from dataclasses import dataclass

from corral.registry.manifests import Limits


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How transfers are cut up and retried; the defaults suit real networks, tests shrink them."""

    min_part_size: int = 64 << 20
    max_part_size: int = 1 << 30
    max_parts: int = 16  # a blob is cut into at most this many parts (within the part sizes)
    parallel: int = 4  # parts fetched at once, at most
    # One stream at a time while the bytes arrive at least this fast (bytes a second): one request
    # reads the untouched parts in order; each RAMP_WINDOW slower than that lets one more part join,
    # up to `parallel` (a link of under ~2 Gbit/s, or a slow storage host, gets parallel parts
    # within a second or two). 0: `parallel` parts from the start. On loopback (a quiet 2-core
    # machine, 1 GB, interleaved medians) one stream took 0.77 s and four parts 1.06 s, curl
    # 0.81 s: a request per part cost the registry ~0.1 s of CPU more, and four receiving threads
    # the pull ~0.07 s more, on cores the hash needs.
    fast_stream: int = 256 << 20
    retries: int = 5  # attempts of a part in a row that make no progress, after the first
    retry_delay: float = 0.5  # seconds before the first retry; doubled each time, at most 30
    timeout: float = 60.0  # seconds without a byte before a connection counts as dropped
    interval: float = 0.1  # seconds between progress events of a layer
    upload_chunk: int = 64 << 20  # push: blobs larger than this go in PATCH chunks of this size
    limits: Limits = Limits()
