"""The `corral` command: argument parsing, dispatch to one module per command group, and the one
place a Corral error ends a command (printed by `context.report`, exit code by `exit.exit_code`)."""

from __future__ import annotations

import argparse
import sys

# A model worker of `serve`/`run` re-runs this module first: it loads llama.cpp before anything
# imports numpy (corral.engine.native says why); the command's own process never loads it.
if any(arg in ("serve", "start", "run") for arg in sys.argv[1:3]):
    from corral.engine.native import load_in_worker

    load_in_worker()
from typing import Callable, Sequence

from corral.cli import definitions, demo, keys, library, models, run, running, serve, transfer
from corral.cli.context import report
from corral.cli.exit import ExitCode, exit_code
from corral.config.version import version_line
from corral.errors import CorralError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each command group registers its own subcommands."""
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Define, run and serve GGUF models from files you keep in git.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    definitions.register(sub)
    models.register(sub)
    run.register(sub)
    transfer.register(sub)
    running.register(sub)
    serve.register(sub)
    demo.register(sub)
    library.register(sub)
    keys.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return handler(args)
    except CorralError as e:
        report(e)
        return exit_code(e)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
