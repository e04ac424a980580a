"""Benchmark: does a long-running server grow with the uploads it has served? Many small
uploads (each a real meeting chunk: validated, committed, queued) through one server; its
resident memory after the first 1,000 and then every 1,000 more. The target: at the end
within 10 % of the value after the first 1,000. Run: `./dev bench upload_memory
[--uploads N]` (100,000 by default; at ~20 uploads/s on 2 cores that is well over an hour).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import aiohttp

from bench.comparison_servers import WORK
from bench.server_under_test import RollscribeServer, rss_kib, save_results
from bench.small_uploads import TUS, meta, segment

CLIENTS = 50
STEP = 1000
SEQS_PER_MEETING = 1000  # a meeting takes this many chunks, then the client opens another


async def upload(session: aiohttp.ClientSession, base: str, body: bytes, m: str, seq: int) -> None:
    values = {"meeting_id": m, "track": "mic", "seq": str(seq), "start_ms": str(seq * 30_000)}
    headers = {**TUS, "Upload-Length": str(len(body)), "Upload-Metadata": meta(values)}
    async with session.post(base + "/files/", headers=headers) as r:
        assert r.status == 201, await r.text()
        location = r.headers["Location"]
    patch = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    async with session.patch(location, data=body, headers=patch) as r:
        assert r.status == 204, await r.text()


async def run(server: RollscribeServer, body: bytes, total: int) -> list[dict[str, int]]:
    samples: list[dict[str, int]] = []
    done = 0
    lock = asyncio.Lock()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:

        async def new_meeting() -> str:
            async with session.post(server.url + "/meetings", json={"tracks": ["mic"]}) as r:
                assert r.status == 201, await r.text()
                return str((await r.json())["id"])

        async def client(first: int) -> None:
            nonlocal done
            n = first
            m = await new_meeting()
            while True:
                async with lock:
                    if done >= total:
                        return
                    done += 1
                    mine = done
                seq = n % SEQS_PER_MEETING
                if seq == 0 and n != first:
                    m = await new_meeting()
                await upload(session, server.url, body, m, seq)
                n += 1
                if mine % STEP == 0:
                    samples.append({"uploads": mine, "rss_kib": rss_kib(server.process.pid)})
                    print(f"{mine:>8} uploads  RSS {samples[-1]['rss_kib'] / 1024:7.1f} MiB")

        await asyncio.gather(*(client(0) for _ in range(CLIENTS)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=100_000)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        root = Path(tmp)
        body = segment(root)
        # Uploads never expire during the run and nothing is transcribed: every row stays.
        # So every upload adds 30 s to the backlog, and admission would refuse a new meeting
        # past its default 4 h (480 such chunks): the limit is lifted for the run.
        server = RollscribeServer(
            root / "rs", "--processes", "1", "--max-backlog-seconds", str(10**12)
        )
        try:
            samples = asyncio.run(run(server, body, args.uploads))
        finally:
            server.stop()
    first = next(s["rss_kib"] for s in samples if s["uploads"] >= STEP)
    last = samples[-1]["rss_kib"]
    print(
        f"\nafter {STEP:,}: {first / 1024:.1f} MiB; after {samples[-1]['uploads']:,}: "
        f"{last / 1024:.1f} MiB ({100 * (last - first) / first:+.1f} %)"
    )
    if not args.no_save:
        save_results("upload_memory", {"clients": CLIENTS, "samples": samples})


if __name__ == "__main__":
    main()
