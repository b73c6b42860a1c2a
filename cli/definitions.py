"""`corral check`, `corral fmt` and `corral convert`: work on definition files, no server needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from corral.cli import output
from corral.cli.exit import ExitCode, UsageError
from corral.dsl import DefinitionError, Parsed, format_modelfile, format_toml, load
from corral.dsl.parameters import PARAMETERS
from corral.store.files import atomic_write


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate Modelfiles and TOML definitions")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--parameters", action="store_true", help="list every parameter and exit")
    p.set_defaults(handler=check)

    p = sub.add_parser("fmt", help="print a definition as a canonical Modelfile")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--write", "-w", action="store_true", help="rewrite the Modelfile in place")
    p.set_defaults(handler=fmt)

    p = sub.add_parser("convert", help="print a definition in the other syntax")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--to", required=True, choices=["toml", "modelfile"])
    p.set_defaults(handler=convert)


def check(args: argparse.Namespace) -> int:
    """Exit 0 when every file is valid (warnings allowed), 1 when any has an error, 2 on misuse."""
    if args.parameters:
        for spec in PARAMETERS.values():
            output.out(f"{spec.name:<20} {spec.type:<9} {spec.help}")
        return ExitCode.OK
    if not args.paths:
        raise UsageError("corral check", "give at least one PATH")
    status = ExitCode.OK
    for path in args.paths:
        if not Path(path).is_file():
            raise UsageError("corral check", f"{path}: no such file")
        try:
            parsed = load(path)
        except DefinitionError as e:  # reported, and the next file is checked too
            output.diagnostics(e.diagnostics)
            status = ExitCode.ERROR
            continue
        output.diagnostics(parsed.warnings)
        output.out(f"{path}: ok")
    return status


def _load(path: str) -> Parsed:
    """The definition at `path`, its warnings printed; a DefinitionError (exit 1) when it is invalid."""
    if not Path(path).is_file():
        raise UsageError("corral", f"{path}: no such file")
    parsed = load(path)
    output.diagnostics(parsed.warnings)
    return parsed


def fmt(args: argparse.Namespace) -> int:
    parsed = _load(args.path)
    text = format_modelfile(parsed.definition)
    if not args.write:
        output.out(text)
        return ExitCode.OK
    if parsed.syntax != "modelfile":
        raise UsageError("corral fmt", f"--write rewrites Modelfiles only; {args.path} is TOML "
                         f"(use `corral convert {args.path} --to modelfile`)")
    _replace(Path(args.path), text)
    return ExitCode.OK


def convert(args: argparse.Namespace) -> int:
    parsed = _load(args.path)
    text = format_toml(parsed.definition) if args.to == "toml" else format_modelfile(parsed.definition)
    output.out(text)
    return ExitCode.OK


def _replace(path: Path, text: str) -> None:
    """Write atomically beside the file, so a crash never leaves a half-written Modelfile; the temp
    file ends in .tmp, which a library folder's watcher ignores."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), mode=path.stat().st_mode & 0o777, suffix=".tmp")
