"""`corral keys create|list|revoke`: the API keys in the Corral home's key file.

They work on `<home>/keys.json` directly (no server needed); a running server sees a change at its
next request. `create` prints the new key on stdout, alone on one line, and only then: the file
keeps its sha256. `list` shows names, scopes, limits and the usage a server counted (from
`<home>/keys-usage.json`, at most a second old while it runs), never a key.
"""

from __future__ import annotations

import argparse

from corral.auth.keys import KeyFile, check_name, parse_env_keys
from corral.auth.scopes import Scope
from corral.auth.usage import UsageFile
from corral.cli import output
from corral.cli.context import settings
from corral.cli.exit import ExitCode, UsageError

COLUMNS = ("NAME", "SCOPE", "MODELS", "RPM", "TPM", "REQUESTS", "PROMPT TOKENS", "GENERATED TOKENS", "CREATED")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys",
                       description="API keys for the server, kept as hashes in the Corral home (keys.json).")
    keys = p.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    c = keys.add_parser("create", help="make a key and print it once",
                        description="Make a key; it is printed once, on stdout, and only its hash is kept.")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.INFERENCE.value,
                   help="inference (run and read models) or admin (also change them); default inference")
    c.add_argument("--models", nargs="+", default=[], metavar="PATTERN",
                   help="model name patterns the key may use (`*` wildcards); default: every model")
    c.add_argument("--rpm", type=_positive, metavar="N", help="requests per minute")
    c.add_argument("--tpm", type=_positive, metavar="N", help="prompt + generated tokens per minute")
    c.set_defaults(handler=create)
    ls = keys.add_parser("list", help="names, scopes, limits and usage (never the keys)")
    ls.set_defaults(handler=list_keys)
    r = keys.add_parser("revoke", help="delete a key", description="Delete a key; a running server refuses it "
                        "from its next request.")
    r.add_argument("name", metavar="NAME")
    r.set_defaults(handler=revoke)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _home():
    return settings("corral keys").models.parent


def create(args: argparse.Namespace) -> int:
    check_name(args.name)
    key, record = KeyFile(_home()).add(args.name, Scope(args.scope), args.models, args.rpm, args.tpm)
    output.out(key)
    output.err(f"created {record.scope.value} key {record.name!r}: it is shown only now")
    return ExitCode.OK


def list_keys(args: argparse.Namespace) -> int:
    s = settings("corral keys")
    home = s.models.parent
    env = parse_env_keys(s.api_keys)
    names = {r.name for r in env}
    records = [*env, *(r for r in KeyFile(home).read() if r.name not in names)]
    if not records:
        output.err("no API keys; create one with: corral keys create NAME --scope inference")
        return ExitCode.OK
    usage = UsageFile(home).read()
    rows = [COLUMNS]
    for r in records:
        u = usage.get(r.name)
        rows.append((r.name, r.scope.value, ",".join(r.models) or "*", str(r.rpm or "-"), str(r.tpm or "-"),
                     str(u.requests if u else 0), str(u.prompt_tokens if u else 0),
                     str(u.generated_tokens if u else 0), r.created if r.source == "file" else "CORRAL_API_KEYS"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        output.out("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return ExitCode.OK


def revoke(args: argparse.Namespace) -> int:
    s = settings("corral keys")
    if any(r.name == args.name for r in parse_env_keys(s.api_keys)):
        raise UsageError("corral keys revoke", f"{args.name!r} comes from CORRAL_API_KEYS: remove it there")
    record = KeyFile(s.models.parent).remove(args.name)
    output.err(f"revoked key {record.name!r}")
    return ExitCode.OK
