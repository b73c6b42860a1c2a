"""/api/library: what the library serves and why, and `corral apply`'s plan-and-apply.

A model whose FROM names a registry model the store lacks is `pulling`, with `pull` saying how
far (`completed`, `total`, `percent`); a failed pull is `error` with `pull.retry_at`. A dry run's
`pull` changes carry `download`: the bytes still to fetch, or why the registry could not say.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json as json_response

from corral.sources.bases import PullState
from corral.sources.library import Change, Entry
from corral.auth.policy import is_loopback
from corral.server.errors import BadRequestError, ForbiddenError
from corral.server.library_watch import sync
from corral.server.schemas import parse_body

if TYPE_CHECKING:
    from corral.server.app import AppContext


class ApplyBody(BaseModel):
    path: str = Field(description="the library folder to reconcile to (absolute, on the server's machine)")
    dry_run: bool = False


def register(bp: Blueprint) -> None:
    bp.add_route(status, "/library", methods=["GET"])
    bp.add_route(apply, "/library/apply", methods=["POST"])


def entry_json(e: Entry) -> dict[str, Any]:
    problem = None
    if e.problem is not None:
        p = e.problem
        problem = {"message": p.message, "path": p.path, "line": p.line, "column": p.column, "hint": p.hint}
    return {"name": e.name, "path": e.path, "state": e.state, "digest": e.digest,
            "changed_at": _time(e.changed_at), "error": problem, "pull": pull_json(e.pull)}


def pull_json(p: PullState | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"model": p.name, "status": p.state, "completed": p.completed, "total": p.total, "percent": p.percent,
            "attempts": p.attempts, "error": p.error, "retry_at": _time(p.retry_at) if p.retry_at else None}


def _time(t) -> str:
    return t.isoformat().replace("+00:00", "Z")


def change_json(c: Change) -> dict[str, Any]:
    download = None
    if c.download is not None:
        d = c.download
        download = {"model": d.name, "bytes": d.bytes, "layers": d.layers, "error": d.error}
    return {"name": c.name, "action": c.action, "path": c.path, "detail": c.detail, "download": download}


async def status(request: Request) -> HTTPResponse:
    ctx: AppContext = request.app.ctx
    library = ctx.library
    if library is None:
        return json_response({"root": None, "models": []})
    running = {m.name.lower(): m for m in ctx.scheduler.running()}
    models = []
    for e in library.entries():
        item = entry_json(e)
        loaded = running.get(e.name.lower())
        if loaded is not None and e.spec is not None and loaded.spec.load_digest != e.spec.load_digest:
            item["state"] = "loading" if e.state == "ok" else e.state
        models.append(item)
    return json_response({"root": str(library.root), "models": models})


async def apply(request: Request) -> HTTPResponse:
    body = parse_body(request.body, ApplyBody)
    if not is_loopback(request.ip or ""):
        # The path names a folder on this machine: a remote client must neither point the server at
        # one nor learn which exist (the existence oracle of CVE-2024-39719). `corral apply` runs
        # beside the server; a remote team deploys with `git pull` into the served library.
        raise ForbiddenError("path: /api/library/apply names a folder on the server's machine, so only a "
                             "client on that machine may call it: run `corral apply` there, or `git pull` "
                             "into the served library folder", param="path")
    root = Path(body.path)
    if not root.is_dir():
        raise BadRequestError(f"path: {body.path} is not a folder on the server's machine")
    ctx: AppContext = request.app.ctx
    library = ctx.runtime.serve_library(root)  # a server started without a library serves this one
    if body.dry_run:
        changes, _ = await asyncio.to_thread(partial(library.plan, root, measure=True))
        changes = [c for c in changes if c.action != "unchanged"]
    else:
        changes = await sync(library, ctx.scheduler, root, observe=ctx.metrics.library_synced if ctx.metrics else None)
        restart_watch(request.app)
    return json_response({"root": str(root), "dry_run": body.dry_run, "changes": [change_json(c) for c in changes]})


def restart_watch(app: Sanic) -> None:
    from corral.server.app import start_watch

    asyncio.ensure_future(start_watch(app))
