"""Benchmark: server CPU with many idle live streams. 1,000 clients follow
`/meetings/{id}/events` (10 on each of 100 recording meetings) and nothing happens; the
server's CPU time over 30 s, as a share of one core. Then one event a second (a chunk
created in one meeting), to show the streams still get it. Run: `./dev bench idle_streams`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import resource
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from bench.comparison_servers import WORK
from bench.server_under_test import RollscribeServer, cpu_seconds, save_results
from codec.segmenter import OggOpusFileWriter

STREAMS = 1000
MEETINGS = 100
MEASURE_S = 30.0


async def follow(
    session: aiohttp.ClientSession, url: str, seen: list[int], ready: list[int]
) -> None:
    async with session.get(url) as response:
        assert response.status == 200, response.status
        first = True
        async for line in response.content:
            if first:  # its first progress event: connected and replayed
                ready.append(1)
                first = False
            if line.startswith(b"event: chunk."):
                seen.append(1)


def one_second_chunk(folder: Path) -> bytes:
    writer = OggOpusFileWriter(folder / "second.opus")
    writer.write(np.zeros(48000, np.float32))
    writer.close()
    return writer.path.read_bytes()


async def run(base: str, pid: int, chunk: bytes) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        meetings = []
        for _ in range(MEETINGS):
            async with session.post(base + "/meetings", json={"tracks": ["mic"]}) as r:
                meetings.append((await r.json())["id"])
        seen: list[int] = []
        ready: list[int] = []
        tasks = [
            asyncio.create_task(
                follow(session, f"{base}/meetings/{meetings[i % MEETINGS]}/events", seen, ready)
            )
            for i in range(STREAMS)
        ]
        connect_start = time.monotonic()
        while len(ready) < STREAMS:  # noqa: ASYNC110 (a count, polled by a benchmark)
            await asyncio.sleep(0.1)
        connect_s = time.monotonic() - connect_start
        await asyncio.sleep(2)
        start_cpu, start = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(MEASURE_S)
        idle = (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)
        # One chunk uploaded per second in one of the meetings: its 10 streams hear it.
        start_cpu, start = cpu_seconds(pid), time.monotonic()
        for seq in range(10):
            meta = ",".join(
                f"{k} {base64.b64encode(v.encode()).decode()}"
                for k, v in {
                    "meeting_id": meetings[0],
                    "track": "mic",
                    "seq": str(seq),
                    "start_ms": str(seq * 1000),
                }.items()
            )
            async with session.post(
                base + "/files/",
                data=chunk,
                headers={
                    "Tus-Resumable": "1.0.0",
                    "Upload-Length": str(len(chunk)),
                    "Upload-Metadata": meta,
                    "Content-Type": "application/offset+octet-stream",
                },
            ) as r:
                assert r.status == 201, await r.text()
            await asyncio.sleep(1)
        await asyncio.sleep(1)
        ticking = (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)
        open_streams = sum(1 for t in tasks if not t.done())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": open_streams,
        "connect_all_s": connect_s,
        "idle_cpu_share": idle,
        "one_event_a_second_cpu_share": ticking,
        "events_heard": len(seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    # 1,000 sockets on each side: past the usual soft limit of 1,024 descriptors.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        server = RollscribeServer(Path(tmp) / "data", "--processes", "1")
        try:
            row = asyncio.run(run(server.url, server.pid, one_second_chunk(Path(tmp))))
        finally:
            server.stop()
    print(
        f"\n{row['streams']} idle streams on {MEETINGS} meetings (all open in "
        f"{row['connect_all_s']:.1f} s): server CPU "
        f"{100 * row['idle_cpu_share']:.1f}% of a core; with one event a second "
        f"{100 * row['one_event_a_second_cpu_share']:.1f}% "
        f"({row['events_heard']} chunk events heard by the 10 streams of that meeting)"
    )
    if not args.no_save:
        save_results("idle_streams", {"meetings": MEETINGS, **row})


if __name__ == "__main__":
    main()
