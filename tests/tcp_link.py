"""A link a test can cut: the network between a server and its database or blob store,
without stopping either (tests/test_database_outage.py, tests/test_blob_store_outage.py)."""

from __future__ import annotations

import asyncio
import threading

from tests.server_process import free_port


class TcpLink:
    """A TCP forwarder on loopback between a server and what it connects to (PostgreSQL, an
    S3 store), which a test cuts (every connection through it closed, and new ones refused)
    and mends on the same port. `mend` opens it the first time."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._answers = asyncio.Event()  # set: answers flow back (`hold` clears it)
        self._answers.set()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        gate: asyncio.Event | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer, self._answers)
        )

    def mend(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

        self._call(listen())

    def _drop_all(self) -> None:
        """No new connections, and every connection through the link closed at once."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def hold(self) -> None:
        """Requests still reach the target; its answers wait in the link until `release`:
        a statement in flight, its outcome decided but not yet known to the caller. Both
        return once the link's own thread has applied them."""

        async def close_gate() -> None:
            self._answers.clear()

        self._call(close_gate())

    def release(self) -> None:
        async def open_gate() -> None:
            self._answers.set()

        self._call(open_gate())

    def cut(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._drop_all()
            await self._server.wait_closed()

        self._call(close())

    def stop(self) -> None:
        async def end() -> None:
            self._drop_all()
            pipes = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

        self._call(end())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
