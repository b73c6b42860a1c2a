"""`corral library status` and `corral apply DIR`: the served library, seen and reconciled."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from corral.cli import output
from corral.cli.client import Client
from corral.cli.context import settings
from corral.cli.exit import ExitCode, UsageError
from corral.sources.library import human_bytes

ACTIONS = {"create": "create", "update-spec": "update (spec only)", "update-reload": "update (reload)",
           "delete": "delete", "error": "error", "pull": "pull base"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("library", help="the served model library")
    lsub = p.add_subparsers(dest="library_command", metavar="COMMAND")
    s = lsub.add_parser("status", help="each library model's state, digest and last error")
    s.set_defaults(handler=status)
    p.set_defaults(handler=status)

    p = sub.add_parser("apply", help="reconcile the running server's library to a folder of definitions")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.set_defaults(handler=apply)


def status(args: argparse.Namespace) -> int:
    # No "is a server running?" first: the request itself fails with "no Corral server is running".
    with Client(settings().host) as client:
        data = client.library()
    if data.get("root") is None:
        output.out("this server serves no library (start it with `corral serve --library DIR`)")
        return ExitCode.OK
    table = Table("NAME", "STATE", "DIGEST", "CHANGED", "ERROR", box=None, pad_edge=False)
    failed = False
    for m in data["models"]:
        err = m.get("error")
        where = f"{err['path']}:{err['line']}:{err['column']}: {err['message']}" if err and err.get("line") else (
            err["message"] if err else "")
        failed |= m["state"] == "error"
        pull = m.get("pull")
        if pull and pull.get("retry_at"):
            where += f" (next try {pull['retry_at'][:19].replace('T', ' ')})"
        table.add_row(m["name"], _state(m), (m.get("digest") or "-").removeprefix("sha256:")[:12],
                      m["changed_at"][:19].replace("T", " "), where)
    output.out(f"library {data['root']}")
    Console(width=200).print(table)
    return ExitCode.ERROR if failed else ExitCode.OK


def _state(m: dict) -> str:
    """`pulling 45%` while a base downloads; otherwise the state as it is."""
    pull = m.get("pull")
    if m["state"] == "pulling" and pull and pull.get("percent") is not None:
        return f"pulling {pull['percent']}%"
    return m["state"]


def apply(args: argparse.Namespace) -> int:
    folder = Path(args.folder).resolve()
    if not folder.is_dir():
        raise UsageError("corral apply", f"{args.folder}: not a folder")
    with Client(settings().host) as client:
        plan = client.apply(str(folder), dry_run=True)
        _print(plan["changes"], "plan" if args.dry_run else "applying")
        if args.dry_run or not plan["changes"]:
            return ExitCode.OK
        done = client.apply(str(folder))
    errors = [c for c in done["changes"] if c["action"] == "error"]
    output.out(f"applied {len(done['changes']) - len(errors)} change(s)" + (f", {len(errors)} error(s)" if errors else ""))
    return ExitCode.ERROR if errors else ExitCode.OK


def _print(changes: list[dict], title: str) -> None:
    if not changes:
        output.out("nothing to change")
        return
    output.out(f"{title}:")
    for c in changes:
        line = f"  {ACTIONS.get(c['action'], c['action']):<20} {c['name']}"
        output.out(line + (f"\n      {c['detail']}" if c.get("detail") else ""))
    sizes = {c["download"]["model"]: c["download"]["bytes"] for c in changes
             if c.get("download") and c["download"].get("bytes") is not None}
    if sizes:
        output.out(f"to download: {human_bytes(sum(sizes.values()))}")
