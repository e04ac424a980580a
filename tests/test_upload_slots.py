"""The tus handler's per-upload lock slots exist only while a request uses them."""

from __future__ import annotations

import asyncio

from server.tus.handler import TusHandler, TusSettings
from storage.upload_locks import SingleNodeLocks


def _handler() -> TusHandler:
    # Only the lock bookkeeping runs here: no database, blob store or hooks are touched.
    return TusHandler(None, None, TusSettings(), SingleNodeLocks())  # type: ignore[arg-type]


def test_slots_go_when_their_requests_are_done():
    handler = _handler()

    async def run() -> None:
        for i in range(2000):  # PATCHes to made-up (well-formed) ids
            async with handler._locked(f"made-up-{i:08d}"):
                pass
        assert handler._slots == {}

    asyncio.run(run())


def test_a_waiting_request_keeps_the_slot_and_the_order():
    handler = _handler()
    order: list[str] = []

    async def writer(name: str, hold_s: float) -> None:
        async with handler._locked("upload-1"):
            order.append(f"{name} in")
            await asyncio.sleep(hold_s)
            order.append(f"{name} out")

    async def run() -> None:
        first = asyncio.create_task(writer("a", 0.2))
        await asyncio.sleep(0.05)
        # The second PATCH of a live writer is refused (423), as before: the slot is shared.
        try:
            async with handler._locked("upload-1"):
                order.append("b in")
        except Exception as exc:  # ApiError UPLOAD_LOCKED
            order.append(type(exc).__name__)
        await first
        assert handler._slots == {}

    asyncio.run(run())
    assert order == ["a in", "ApiError", "a out"]
