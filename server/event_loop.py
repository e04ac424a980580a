"""Which asyncio event loop a server process runs on.

uvloop by default: a server's time goes to the loop's scheduling and socket work as much as
to its own code (many small uploads: bench/README.md, "Many small uploads"), and uvloop does
that work in C. `--event-loop asyncio` keeps the standard library's loop, to compare against
or to rule uvloop out when something behaves oddly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError(f"unknown event loop {name!r}: give one of {', '.join(EVENT_LOOPS)}")


def run_on(name: str, main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the named loop (Python 3.11's `asyncio.run` takes no factory)."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(name)) as runner:
        return runner.run(main)
