"""`corral check`, `corral fmt` and `corral convert`: work on definition files, no server needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from corral.cli import output
from corral.errors import CorralError
from corral.dsl import DefinitionError, FormatError, Parsed, format_modelfile, format_toml, load
from corral.dsl.parameters import PARAMETERS
from corral.store.files import atomic_write

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


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
        return EXIT_OK
    if not args.paths:
        output.err("corral check: error: give at least one PATH")
        return EXIT_USAGE
    status = EXIT_OK
    for path in args.paths:
        if not Path(path).is_file():
            output.err(f"corral check: error: {path}: no such file")
            return EXIT_USAGE
        try:
            parsed = load(path)
        except DefinitionError as e:
            output.diagnostics(e.diagnostics)
            status = EXIT_INVALID
            continue
        output.diagnostics(parsed.warnings)
        output.out(f"{path}: ok")
    return status


def _load(path: str) -> Parsed | None:
    if not Path(path).is_file():
        output.err(f"corral: error: {path}: no such file")
        return None
    try:
        parsed = load(path)
    except DefinitionError as e:
        output.diagnostics(e.diagnostics)
        return None
    output.diagnostics(parsed.warnings)
    return parsed


def fmt(args: argparse.Namespace) -> int:
    parsed = _load(args.path)
    if parsed is None:
        return EXIT_INVALID if Path(args.path).is_file() else EXIT_USAGE
    try:
        text = format_modelfile(parsed.definition)
    except FormatError as e:
        output.err(f"{args.path}: error: {e}")
        return EXIT_INVALID
    if not args.write:
        output.out(text)
        return EXIT_OK
    if parsed.syntax != "modelfile":
        output.err(f"corral fmt: error: --write rewrites Modelfiles only; {args.path} is TOML "
                   f"(use `corral convert {args.path} --to modelfile`)")
        return EXIT_USAGE
    _replace(Path(args.path), text)
    return EXIT_OK


def convert(args: argparse.Namespace) -> int:
    parsed = _load(args.path)
    if parsed is None:
        return EXIT_INVALID if Path(args.path).is_file() else EXIT_USAGE
    try:
        text = format_toml(parsed.definition) if args.to == "toml" else format_modelfile(parsed.definition)
    except CorralError as e:
        output.err(f"{args.path}: error: {e}")
        return EXIT_INVALID
    output.out(text)
    return EXIT_OK


def _replace(path: Path, text: str) -> None:
    """Write atomically beside the file, so a crash never leaves a half-written Modelfile; the temp
    file ends in .tmp, which a library folder's watcher ignores."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), mode=path.stat().st_mode & 0o777, suffix=".tmp")
