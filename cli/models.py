"""`corral create/list/show/cp/rm/render/plan`.

create, list, show, cp and rm go through the server when one answers at CORRAL_HOST (so a server
on another machine, or with another store, is the one changed), and work on the local store
directly otherwise. render and plan always compile locally.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from corral.cli import output
from corral.cli.client import Client, parse_time, running_server
from corral.cli.context import compile_options, settings, store
from corral.cli.exit import ExitCode, UsageError
from corral.cli.transfer import Display, pull_model
from corral.compiler.compile import compile_definition
from corral.compiler.templates.prompt import chat_prompt
from corral.compiler.plan import human_bytes
from corral.compiler.resolve import DIGEST, NoModels, expand, find_weights, looks_like_path
from corral.compiler.spec import RuntimeSpec
from corral.dsl import load
from corral.dsl.ir import ModelDefinition, Text
from corral.store.create import StoreResolver, copy_model, create_model, delete_models
from corral.store import names
from corral.store.files import file_sha256
from corral.sources.stored import Models

SAMPLE_CONVERSATION = [{"role": "user", "content": "Hello, how are you?"}]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create", help="create a model from a Modelfile or TOML definition")
    p.add_argument("name")
    p.add_argument("-f", "--file", default="Modelfile", help="definition file (default: ./Modelfile)")
    p.add_argument("--insecure", action="store_true", help="pull a FROM model that is not here over plain http")
    p.set_defaults(handler=create)

    p = sub.add_parser("list", aliases=["ls"], help="list models")
    p.set_defaults(handler=list_models)

    p = sub.add_parser("show", help="show a model's definition and details")
    p.add_argument("name")
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        p.add_argument(f"--{flag}", action="store_true", help=f"print only the {flag}")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the GGUF's metadata and tensors")
    p.set_defaults(handler=show)

    p = sub.add_parser("cp", help="copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(handler=cp)

    p = sub.add_parser("rm", help="remove models")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=rm)

    p = sub.add_parser("render", help="print the exact prompt a model receives for some messages")
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("--messages", metavar="FILE", help="JSON array of {role, content} ('-' for stdin)")
    p.set_defaults(handler=render)

    p = sub.add_parser("plan", help="print the memory/GPU plan for a model")
    p.add_argument("target", metavar="NAME|PATH")
    p.set_defaults(handler=plan)


def _progress() -> Progress:
    console = Console(stderr=True)  # off the terminal it would print only a blank line
    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=console, transient=True, disable=not console.is_terminal)


def create(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError("corral create", f"{path}: no such file")
    parsed = load(path)
    output.diagnostics(parsed.warnings)
    s = settings()
    server = running_server(s.host)
    if server is not None:
        with server:
            return _create_through(server, args.name, path, parsed.definition, args.insecure)
    with _progress() as bar:
        task = bar.add_task("copying weights", total=None)

        def pull_base(name: str) -> None:  # FROM names a model the store lacks: pull it, as Ollama does
            bar.stop()  # one live display at a time: the pull shows its own
            try:
                pull_model(s, name, insecure=args.insecure, server=None)
            finally:
                bar.start()

        created = create_model(
            store(s), args.name, parsed.definition, base_dir=path.parent.resolve(),
            options=compile_options(s), source=str(path),
            progress=lambda done, total: bar.update(task, completed=done, total=total), fetch=pull_base,
        )
    spec = created.spec
    t = spec.template
    named = f", recognised as {t.name}" if t.name else ""
    output.out(f"template: {t.kind} (from the {t.origin}{named})")
    output.out(f"plan: {spec.plan.reasons[0] if spec.plan.reasons else spec.plan.backend}")
    output.out(f"created {created.name} ({created.digest[:12]})")
    return ExitCode.OK


def _create_through(client: Client, name: str, path: Path, d: ModelDefinition, insecure: bool) -> int:
    """Ollama's way: upload the local files as blobs, then POST /api/create naming them by digest
    (the server pulls a FROM model it lacks, its progress streamed with the create's)."""
    base = path.parent.resolve()

    def upload(value: str, span, what: str) -> tuple[str, str]:
        found = find_weights(expand(value, base), span, what=what)
        digest = "sha256:" + file_sha256(found)
        if not client.has_blob(digest):
            output.err(f"uploading {found.name} ({human_bytes(found.stat().st_size)})")
            client.push_blob(digest, found)
        return found.name, digest

    fields: dict = {}
    value = d.from_.value
    if not DIGEST.match(value) and (expand(value, base).exists() or looks_like_path(value)):
        filename, digest = upload(value, d.from_.span, "FROM")
        fields["files"] = {filename: digest}
    else:
        fields["from"] = value
    if d.projector is not None:  # the server tells it from the model by its architecture, as Ollama's does
        if "files" not in fields:
            raise UsageError("corral create", f"{path.name}: a PROJECTOR needs a FROM file to go with it when a "
                             "server runs (Ollama's /api/create takes a projector only among `files`)")
        filename, digest = upload(d.projector.value, d.projector.span, "PROJECTOR")
        fields["files"][filename] = digest
    if d.draft is not None:
        raise UsageError("corral create", f"{path.name}: DRAFT cannot be sent to a running server (Ollama's "
                         "/api/create has no field for it); put the definition in the library folder, or "
                         "create it with no server running")
    if d.adapters:
        fields["adapters"] = dict(upload(a.value, a.span, "ADAPTER") for a in d.adapters)
    for key in ("template", "system", "parser", "renderer"):
        text = getattr(d, key)
        if text is not None:
            fields[key] = text.value
    if d.licenses:
        fields["license"] = [x.value for x in d.licenses]
    if d.parameters:
        fields["parameters"] = d.parameter_dict()
    if d.requires is not None:
        fields["requires"] = d.requires.value
    if d.messages:
        fields["messages"] = [{"role": m.role, "content": m.content} for m in d.messages]
    if insecure:
        fields["insecure"] = True
    with Display(success=False) as show:
        for progress in client.create(name, **fields):
            show(progress)
    shown = names.parse(name).display_shortest()
    digest = next((m.get("digest", "") for m in client.tags() if m.get("name") == shown), "")
    output.out(f"created {shown}" + (f" ({digest.removeprefix('sha256:')[:12]})" if digest else ""))
    return ExitCode.OK


def _ago(when: datetime) -> str:
    seconds = (datetime.now(timezone.utc) - when).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago" if seconds >= 1 else "Just now"


def list_models(args: argparse.Namespace) -> int:
    table = Table("NAME", "ID", "SIZE", "MODIFIED", box=None, pad_edge=False)
    s = settings()
    server = running_server(s.host)
    if server is not None:
        with server:
            for m in server.tags():
                digest = m.get("digest", "").removeprefix("sha256:")
                table.add_row(m["name"], digest[:12], human_bytes(m.get("size", 0)),
                              _ago(parse_time(m["modified_at"])) if m.get("modified_at") else "")
    else:
        for entry in store(s).list_models():
            table.add_row(entry.name, entry.digest[:12], human_bytes(entry.size), _ago(entry.modified_at))
    Console(width=200).print(table, highlight=False)
    return ExitCode.OK


def show(args: argparse.Namespace) -> int:
    s = settings()
    server = running_server(s.host)
    if server is not None:
        with server:
            info: dict = dict(server.show(args.name, verbose=args.verbose))
    else:
        local = Models(store(s), compile_options(s))
        if args.modelfile:
            output.out(local.modelfile(args.name))
            return ExitCode.OK
        shown = local.show(args.name, verbose=args.verbose)
        info = {"modelfile": shown.modelfile, "parameters": shown.parameters, "template": shown.template,
                "system": shown.system, "license": shown.license, "details": shown.details,
                "model_info": shown.model_info, "capabilities": shown.capabilities, "tensors": shown.tensors}
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            output.out(info.get(flag) or "")
            return ExitCode.OK
    output.out(summary(info) + (verbose_tables(info) if args.verbose else ""))
    return ExitCode.OK


def verbose_tables(info: dict) -> str:
    """`show -v`'s additions, as `ollama show -v` prints them: every metadata key, then the tensors."""
    lines = ["", "  Metadata"]
    for key, value in (info.get("model_info") or {}).items():
        lines.append(f"    {key:<40}{_metadata_value(value)}")
    tensors = info.get("tensors") or []
    if tensors:
        lines += ["", "  Tensors"]
        lines += [f"    {t['name']:<40}{t['type']:<10}{list(t['shape'])}" for t in tensors]
    return "\n".join(lines)


def _metadata_value(value: object) -> str:
    """A value on one line: long arrays by their length and first items, as `ollama show -v` cuts them."""
    if isinstance(value, list) and len(value) > 5:
        return "[" + " ".join(str(v) for v in value[:5]) + f" ...+{len(value) - 5} more]"
    if isinstance(value, list):
        return "[" + " ".join(str(v) for v in value) + "]"
    return str(value)


def summary(info: dict) -> str:
    """`corral show`'s overview, from /api/show's fields (the same whether local or from a server)."""
    details = info.get("details") or {}
    model_info = info.get("model_info") or {}
    arch = model_info.get("general.architecture") or details.get("family", "")
    rows = [("architecture", arch), ("parameters", details.get("parameter_size", "")),
            ("context length", model_info.get(f"{arch}.context_length")),
            ("embedding length", model_info.get(f"{arch}.embedding_length")),
            ("quantization", details.get("quantization_level", ""))]
    lines = ["  Model"] + [f"    {label:<20}{value}" for label, value in rows if value not in (None, "")]
    lines += ["", "  Capabilities"] + [f"    {c}" for c in info.get("capabilities") or []]
    if info.get("error"):
        lines += ["", "  Error (in the latest edit; shown is the version serving)", f"    {info['error']}"]
    if info.get("parameters"):
        lines += ["", "  Parameters"] + [f"    {line}" for line in info["parameters"].splitlines()]
    if info.get("system"):
        lines += ["", "  System", f"    {info['system'].splitlines()[0]}"]
    if info.get("license"):
        lines += ["", "  License", f"    {info['license'].splitlines()[0]}"]
    return "\n".join(lines)


def cp(args: argparse.Namespace) -> int:
    s = settings()
    server = running_server(s.host)
    if server is not None:
        with server:
            server.copy(args.source, args.destination)
    else:
        copy_model(store(s), args.source, args.destination)
    output.out(f"copied '{args.source}' to '{args.destination}'")
    return ExitCode.OK


def rm(args: argparse.Namespace) -> int:
    s = settings()
    server = running_server(s.host)
    try:
        for name in args.names:
            if server is not None:
                server.delete(name)
            else:
                delete_models(store(s), [name])
            output.out(f"deleted '{name}'")
    finally:
        if server is not None:
            server.close()
    return ExitCode.OK


def spec_for(target: str) -> RuntimeSpec:
    """A model name in the store, a definition file, or a bare GGUF file -> its compiled spec."""
    s = settings()
    path = Path(target)
    if path.is_file():
        with path.open("rb") as f:
            is_gguf = f.read(4) == b"GGUF"
        if is_gguf:
            definition = ModelDefinition(from_=Text(value=str(path.resolve())))
            source = None
        else:
            definition = load(path).definition
            source = str(path)
        models = store(s)
        resolver = StoreResolver(models) if models.root.exists() else NoModels()
        return compile_definition(definition, name=path.stem, base_dir=path.parent.resolve(),
                                  resolver=resolver, options=compile_options(s), source=source)
    return Models(store(s), compile_options(s)).spec(target)


def render(args: argparse.Namespace) -> int:
    messages = SAMPLE_CONVERSATION
    if args.messages:
        raw = sys.stdin.read() if args.messages == "-" else Path(args.messages).read_text(encoding="utf-8")
        try:
            messages = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UsageError("corral render", f"{args.messages}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        if not (isinstance(messages, list) and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                    and isinstance(m.get("content", ""), str) for m in messages)):
            raise UsageError("corral render", f"{args.messages}: expected a JSON array of {{role, content}} objects")
    sys.stdout.write(chat_prompt(spec_for(args.target), messages, None))
    sys.stdout.flush()
    return ExitCode.OK


def plan(args: argparse.Namespace) -> int:
    spec = spec_for(args.target)
    table = Table("", "", box=None, show_header=False, pad_edge=False)
    table.add_row("model", f"{spec.name} ({spec.model.architecture}, {spec.model.parameter_size}, {spec.model.quantization})")
    for label, value in spec.plan.rows():
        table.add_row(label, value)
    console = Console(width=200)
    console.print(table)
    for reason in spec.plan.reasons:
        console.print(f"- {reason}", highlight=False)
    return ExitCode.OK
