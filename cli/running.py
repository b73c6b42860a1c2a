"""`corral ps` and `corral stop`: the models a server holds in memory. Both need a running server."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from corral.cli.client import Client, ClientError, RunningModel, base_url, parse_time, running_server
from corral.cli.context import settings
from corral.cli.exit import ExitCode
from corral.compiler.plan import human_bytes
from corral.errors import CorralError
from corral.store import names

FOREVER_AFTER_DAYS = 365 * 10  # an expiry this far out is a model kept loaded (keep_alive < 0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ps", help="list the models a running server has loaded")
    p.set_defaults(handler=ps)

    p = sub.add_parser("stop", help="unload a model from a running server")
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(handler=stop)


def _connected() -> Client:
    """A client for the running server; ClientError when none answers."""
    host = settings().host
    client = running_server(host)
    if client is None:
        raise ClientError(f"no Corral server is running at {base_url(host)}; start one with `corral serve`")
    return client


def ps(args: argparse.Namespace) -> int:
    with _connected() as client:
        models = client.ps()
    table = Table("NAME", "ID", "SIZE", "PROCESSOR", "UNTIL", box=None, pad_edge=False)
    for m in models:
        digest = m.get("digest", "").removeprefix("sha256:")
        table.add_row(m.get("name", ""), digest[:12], human_bytes(m.get("size", 0)), processor(m), until(m))
    console = Console(width=200)
    console.print(table, highlight=False)
    for m in models:
        if m.get("cpu_reason"):
            console.print(f"{m.get('name', '')} runs on the CPU although this machine has a GPU: {m['cpu_reason']}",
                          highlight=False, markup=False, soft_wrap=True)
    return ExitCode.OK


def stop(args: argparse.Namespace) -> int:
    with _connected() as client:
        wanted = _key(args.model)
        if not any(_key(m.get("name", "")) == wanted for m in client.ps()):
            raise ClientError(f'couldn\'t find model "{args.model}" to stop')
        client.generate(args.model, "", keep_alive=0)
    return ExitCode.OK


def _key(name: str) -> object:
    """What names compare by (`smol` is `smol:latest`), or the text itself when it is not a name."""
    try:
        return names.parse(name)
    except CorralError:
        return name


def processor(m: RunningModel) -> str:
    """`100% GPU`, `100% CPU` or `48%/52% CPU/GPU`, from size_vram out of size."""
    size, vram = m.get("size", 0), m.get("size_vram", 0)
    if size <= 0:
        return "Unknown"
    if vram <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    gpu = round(vram / size * 100)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def until(m: RunningModel, now: datetime | None = None) -> str:
    """When the model unloads, in words ("4 minutes from now", "Forever", "Stopping...")."""
    text = m.get("expires_at")
    if not text:
        return "Never"
    when = parse_time(text)
    seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds <= 0:
        return "Stopping..."
    if seconds > FOREVER_AFTER_DAYS * 86400:
        return "Forever"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            n = int(seconds // size)
            if n == 1:
                return f"About a{'n' if unit == 'hour' else ''} {unit} from now"
            return f"{n} {unit}s from now"
    return "Less than a second from now"
