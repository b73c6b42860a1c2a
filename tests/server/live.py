"""Run a Sanic app on a free loopback port in a background thread, for tests that speak HTTP."""

from __future__ import annotations

import asyncio
import threading

from sanic import Sanic

from tests.sealed import free_port


class LiveServer:
    """`with LiveServer(app) as server:` serves `app` at `server.url` until the block ends.

    The app's before_server_start / after_server_stop listeners run as under `corral serve`.
    """

    def __init__(self, app: Sanic, host: str = "127.0.0.1"):
        self.app = app
        self.host = host  # "0.0.0.0" for tests that call from another address of this machine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sanic-{self.port}", daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("the test server did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def call(self, coro, timeout: float = 60):
        """Run a coroutine on the server's loop (to reach the scheduler) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to the test thread
            self._error = e
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await self.app.create_server(host=self.host, port=self.port, access_log=False,
                                              return_asyncio_server=True)
        await server.startup()
        await server.before_start()
        await server.after_start()
        self._ready.set()
        await self._stop.wait()
        await server.before_stop()
        server.close()
        await server.wait_closed()
        # As Sanic's own runner does: close idle keep-alive connections, give the rest a moment, abort.
        for connection in list(server.connections):
            connection.close_if_idle()
        for _ in range(50):
            if not server.connections:
                break
            await asyncio.sleep(0.02)
        for connection in list(server.connections):
            connection.abort()
        await asyncio.sleep(0.05)
        await server.after_stop()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
