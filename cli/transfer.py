"""`corral pull NAME` and `corral push NAME`, and the pull `run` and `create` do for a missing model.

Both go through the server at CORRAL_HOST when one answers (its /api/pull and /api/push, streamed,
so the server's store is the one changed), and otherwise run in this process on the local store
(corral.registry, with CORRAL_REGISTRY and the credentials under the Corral home). Progress goes to
stderr: on a terminal a rich bar per layer (`pulling <12 hex>`, size, percent, speed, time left),
otherwise plain lines, one per status and one per tenth of each layer. The last line is `success`,
as Ollama prints it. Ctrl-C stops a transfer; what was downloaded stays for the next pull to resume.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, TextIO

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TaskProgressColumn, TextColumn,
                           TimeRemainingColumn, TransferSpeedColumn)

from corral.cli.client import Client, running_server
from corral.cli.context import settings, store
from corral.cli.exit import ExitCode
from corral.compiler.plan import human_bytes
from corral.config.settings import Settings
from corral.registry.events import SUCCESS

INSECURE_HELP = "speak plain http to the registry (a local or test registry)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="pull a model from a registry",
                       description="Download a model and its layers into the store (the server's, when one "
                       "answers at CORRAL_HOST), verified by sha256; an interrupted pull resumes.")
    p.add_argument("name", metavar="NAME", help="[HOST/][NAMESPACE/]MODEL[:TAG]")
    p.add_argument("--insecure", action="store_true", help=INSECURE_HELP)
    p.set_defaults(handler=pull_command)

    p = sub.add_parser("push", help="push a model to a registry",
                       description="Upload a stored model to the registry its name's host names (layers the "
                       "registry has are skipped), then its manifest.")
    p.add_argument("name", metavar="NAME", help="HOST/NAMESPACE/MODEL[:TAG]")
    p.add_argument("--insecure", action="store_true", help=INSECURE_HELP)
    p.set_defaults(handler=push_command)


def pull_command(args: argparse.Namespace) -> int:
    s = settings()
    server = running_server(s.host)
    try:
        pull_model(s, args.name, insecure=args.insecure, server=server)
    finally:
        if server is not None:
            server.close()
    return ExitCode.OK


def push_command(args: argparse.Namespace) -> int:
    s = settings()
    server = running_server(s.host)
    with Display() as show:
        if server is not None:
            with server:
                for item in server.push(args.name, insecure=args.insecure):
                    show(item)
        else:
            from corral.registry.access import RegistryAccess

            RegistryAccess.from_settings(s).push(store(s), args.name, insecure=args.insecure,
                                                 progress=lambda event: show(event.to_json()))
    return ExitCode.OK


def pull_model(s: Settings, name: str, *, insecure: bool, server: Client | None) -> None:
    """Pull `name` through `server`, or into the local store when it is None, showing the progress."""
    with Display() as show:
        if server is not None:
            for item in server.pull(name, insecure=insecure):
                show(item)
        else:
            from corral.registry.access import RegistryAccess

            RegistryAccess.from_settings(s).pull(store(s), name, insecure=insecure,
                                                 progress=lambda event: show(event.to_json()))


class Display:
    """Shows a transfer's status objects (Ollama's `status`, `digest`, `total`, `completed`) on stderr.

    `success=False` leaves the final `success` out (a create that pulled its base prints its own end).
    """

    def __init__(self, stream: TextIO | None = None, *, terminal: bool | None = None, success: bool = True):
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.success = success
        self.status: str | None = None  # the last status shown
        self.tenths: dict[str, int] = {}  # plain lines: per layer, the last tenth printed
        self.tasks: dict[str, TaskID] = {}  # bars: per layer
        self.bars: Progress | None = None
        self.live = False  # the bars are being redrawn (between a layer's first event and the next status)
        if self.terminal:
            self.bars = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(file=self.stream, force_terminal=True))

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_bars()

    def _stop_bars(self) -> None:
        """Leave the bars drawn as they are; what follows prints below them."""
        if self.bars is not None and self.live:
            self.bars.stop()
            self.live = False

    def __call__(self, item: Mapping[str, Any]) -> None:
        status = str(item.get("status", ""))
        digest, total = item.get("digest"), item.get("total")
        if digest and isinstance(total, int):
            self._layer(status, str(digest), total, int(item.get("completed") or 0))
        elif status and status != self.status and (self.success or status != SUCCESS):
            self.status = status
            self._line(status)

    def _line(self, text: str) -> None:
        if self.bars is not None:
            self._stop_bars()
            self.bars.console.print(text, highlight=False, markup=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _layer(self, status: str, digest: str, total: int, completed: int) -> None:
        self.status = status
        if self.bars is not None:
            if not self.live:
                self.bars.start()
                self.live = True
            task = self.tasks.get(digest)
            if task is None:
                self.tasks[digest] = self.bars.add_task(status, total=total, completed=completed)
            else:
                self.bars.update(task, total=total, completed=completed)
            return
        tenth = 10 if total <= 0 else min(10, completed * 10 // total)
        if digest in self.tenths and tenth <= self.tenths[digest]:
            return
        self.tenths[digest] = tenth
        self._line(f"{status}: {tenth * 10}% ({human_bytes(completed)}/{human_bytes(total)})")
