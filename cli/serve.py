"""`corral serve`: the API server in the foreground, in this one process.

Sanic runs in single-process mode: no worker fork and never Sanic's auto-reload (which restarts
the process on file changes); hot reload of definitions is Corral's own watcher's job.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from corral.cli.context import settings as read_settings
from corral.cli.exit import ExitCode
from corral.config.settings import variables

log = logging.getLogger("corral.serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", aliases=["start"], help="run the API server in the foreground",
                       description="Serve the Ollama-compatible API (/api) and the OpenAI-compatible one (/v1). "
                       f"Settings come from CORRAL_* environment variables: {', '.join(variables())}.")
    p.add_argument("--host", metavar="HOST[:PORT]",
                   help="address to listen on (overrides CORRAL_HOST; default 127.0.0.1:11434)")
    p.add_argument("--library", metavar="DIR",
                   help="serve and watch this folder of definitions (overrides CORRAL_LIBRARY; default: the "
                   "checkout's library/ when Corral runs from a checkout)")
    p.add_argument("--insecure-no-auth", action="store_true", default=None,
                   help="listen on a non-loopback address without any API key (CORRAL_INSECURE_NO_AUTH): "
                   "anyone who reaches it may use every route")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (CORRAL_TLS_CERT)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (CORRAL_TLS_KEY)")
    p.set_defaults(handler=serve)


def checkout_library() -> Path | None:
    """The repository's library/ when Corral runs from a checkout (an editable install)."""
    top = Path(__file__).resolve().parent.parent
    if (top / "pyproject.toml").is_file() and (top / "library").is_dir() and (top / ".git").exists():
        return top / "library"
    return None


def configure_logging() -> None:
    """Corral's own loggers to stderr at INFO (Sanic configures its own)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("corral")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def serve(args: argparse.Namespace) -> int:
    overrides: dict = {"host": args.host} if args.host else {}
    if args.library:
        overrides["library"] = Path(args.library).resolve()
    if args.insecure_no_auth:
        overrides["insecure_no_auth"] = True
    for name in ("tls_cert", "tls_key"):
        if getattr(args, name):
            overrides[name] = Path(getattr(args, name)).resolve()
    settings = read_settings("corral serve", **overrides)
    # Unset CORRAL_LIBRARY (not one set empty) means: the checkout's library/, in a checkout.
    if settings.library is None and "library" not in settings.model_fields_set and checkout_library():
        settings = settings.model_copy(update={"library": checkout_library()})
    configure_logging()
    from corral.server.app import create_app
    from corral.server.guard import listen_options

    # The bind policy and TLS are checked before anything loads: a refusal exits at once.
    options = listen_options(settings)
    app = create_app(settings)
    host, port = settings.bind
    shown = f"[{host}]" if ":" in host else host

    @app.after_server_start
    async def _announce(app_, *_):
        count = len(app.ctx.store.list_models()) if settings.models.exists() else 0
        log.info("listening on %s://%s:%d, serving %d model%s from %s", "https" if options else "http", shown,
                 port, count, "" if count == 1 else "s", settings.models)
        if app.ctx.library is not None:
            entries = app.ctx.library.entries()
            broken = [e for e in entries if e.state == "error"]
            log.info("library %s: %d model%s%s", app.ctx.library.root, len(entries), "" if len(entries) == 1 else "s",
                     f", {len(broken)} with errors (see `corral library status`)" if broken else "")

    app.run(host=host, port=port, single_process=True, access_log=False, motd=False, auto_reload=False,
            **options)
    return ExitCode.OK
