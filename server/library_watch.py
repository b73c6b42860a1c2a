"""The library watcher: file changes in the library folder become one reconcile each.

watchfiles groups a burst of events (an editor's temp file and rename, a git checkout touching
many files) into one batch; each batch runs Library.sync() once, in a thread, and then tells the
scheduler what it cannot learn from specs alone: a deleted model should unload once drained, and
a model whose weights or load settings changed is loaded again beside the running one at once,
so the first request after the edit does not wait for the load.

A base model a definition waits for arrives from its background pull on another thread; the
watcher hands that over to this loop (`library.resync`), so the sync it causes is followed up on
the scheduler like any other.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable

from corral.runtime.scheduler import Scheduler
from corral.sources.library import Change, Library, discover

log = logging.getLogger(__name__)

DEBOUNCE_MS = 150  # longest a batch is held open while events keep arriving
STEP_MS = 30  # quiet time that closes a batch

Observer = Callable[[int], None]  # told after each reconcile how many errors it had (/metrics)


def watched_paths(library: Library) -> set[Path]:
    """The library folder, plus the real folders of definitions that are symlinks into elsewhere."""
    paths = {library.root.resolve()}
    for path in discover(library.root):
        if path.is_symlink():
            paths.add(path.resolve().parent)
    return {p for p in paths if p.is_dir()}


async def apply_changes(changes: list[Change], scheduler: Scheduler | None) -> None:
    """Follow up a sync on the scheduler: unload deleted models, pre-load reloaded ones."""
    if scheduler is None:
        return
    running = {m.name.lower() for m in scheduler.running()}
    for change in changes:
        if change.action == "delete":
            await scheduler.unload(change.name)
        elif change.action == "update-reload" and change.name.lower() in running:
            asyncio.ensure_future(_preload(scheduler, change.name))


async def _preload(scheduler: Scheduler, name: str) -> None:
    try:
        await scheduler.load(name)
    except Exception as e:  # the next request will report it with its own status
        log.warning("library: pre-loading %s failed: %s", name, e)


async def sync(library: Library, scheduler: Scheduler | None, root: Path | None = None,
               observe: Observer | None = None) -> list[Change]:
    try:
        changes = await asyncio.to_thread(library.sync, root)
    except Exception:
        if observe is not None:
            observe(1)
        raise
    if observe is not None:
        observe(sum(1 for c in changes if c.action == "error"))
    await apply_changes(changes, scheduler)
    return changes


async def watch(library: Library, scheduler: Scheduler, stop: asyncio.Event,
                observe: Observer | None = None) -> None:
    """Reconcile on every change until `stop` is set; restarts when the watched folders change."""
    from watchfiles import awatch

    follower = asyncio.ensure_future(_follow_bases(library, scheduler, stop, observe))
    try:
        await _watch_files(library, scheduler, stop, awatch, observe)
    finally:
        follower.cancel()
        try:
            await follower
        except asyncio.CancelledError:
            pass


async def _follow_bases(library: Library, scheduler: Scheduler, stop: asyncio.Event,
                        observe: Observer | None = None) -> None:
    """Sync once more each time a pulled base arrives, until `stop` is set."""
    loop = asyncio.get_running_loop()
    arrived = asyncio.Event()

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(arrived.set)
        except RuntimeError:  # the loop has closed: the server is gone
            pass

    library.resync = wake
    try:
        while not stop.is_set():
            await arrived.wait()
            arrived.clear()
            try:
                await sync(library, scheduler, observe=observe)
            except Exception:
                log.exception("library: reconcile after a pull failed")
    finally:
        if library.resync is wake:
            library.resync = None


async def _watch_files(library: Library, scheduler: Scheduler, stop: asyncio.Event, awatch,
                       observe: Observer | None = None) -> None:
    while not stop.is_set():
        paths = watched_paths(library)
        if not paths:
            await asyncio.sleep(0.5)  # the folder may not exist yet
            await sync(library, scheduler, observe=observe)
            continue
        log.info("library: watching %s", ", ".join(str(p) for p in sorted(paths)))
        async for _events in awatch(*paths, debounce=DEBOUNCE_MS, step=STEP_MS, stop_event=stop,
                                    recursive=True, force_polling=False):
            try:
                await sync(library, scheduler, observe=observe)
            except Exception:  # a watcher that dies would silently stop deploys
                log.exception("library: reconcile failed")
            if watched_paths(library) != paths:
                break
