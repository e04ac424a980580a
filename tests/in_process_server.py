"""The whole server app (tus handler, upload store, database, blob store, middlewares) in
this test process, on a thread of its own with its own event loop: the protocol tests' fast
path. Nothing is spawned, so a test run pays no interpreter start, import or model check per
server; the process-level tests (`tests/server_process.py`) still start real `rollscribe
serve` processes for what only a process shows (signals, restarts, siblings, crashes).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from server.app import build_app
from server.config import add_serve_arguments, config_from_args
from server.event_loop import new_event_loop
from server.http_protocol import AppRunner
from server.key_ring import KeyRing
from tests.databases import storage_args
from tests.server_process import free_port


@dataclass
class InProcessServer:
    data_dir: Path
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: AppRunner | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the app runs on (None before start and after stop)."""
        return self._loop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InProcessServer:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser)
        args = parser.parse_args(
            [
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--workers",
                "0",
                "--processes",
                "1",
                *storage_args(self.data_dir),
                *self.extra,
            ]
        )
        config = config_from_args(args)
        keys = KeyRing(config.api_keys_file, config.api_keys, config.key_limits)
        self._loop = new_event_loop(config.event_loop)
        started: Future[None] = Future()

        async def serve() -> None:
            from aiohttp import web

            app = build_app(config, keys)
            self._runner = AppRunner(app, header_timeout_s=config.header_timeout_s)
            await self._runner.setup()
            await web.TCPSite(self._runner, config.host, config.port).start()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="in-process-server", daemon=True)
        self._thread.start()
        started.result(timeout=60)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shut_down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            # Keep-alive connections' handler tasks outlive the runner: end them here, not
            # in the garbage collector's "Task was destroyed but it is pending!".
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut_down(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        self._loop = None
