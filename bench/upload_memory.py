"""Benchmark: does a long-running server grow with the uploads it has served? Many small
uploads (each a real meeting chunk: validated, committed, queued) through one server; its
resident memory as every 1,000th upload completes (the other clients' requests in flight),
and at 1,000 and at the end with no request in flight. The target: at the end within 10 % of
the value after the first 1,000. The in-flight reading at the end can fall in a burst of
the clients opening new meetings; the settled readings compare what the server keeps. Run:
`./dev bench upload_memory [--uploads N]` (100,000 by default: 7 to 8 minutes on a 2-core
AMD EPYC, well over an hour on the slower machine of 2026-12-03).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.comparison_servers import WORK
from bench.deleted_files import note_deletions
from bench.server_under_test import RollscribeServer, rss_kib, save_results
from bench.small_uploads import TUS, meta, segment

CLIENTS = 50
STEP = 1000
SEQS_PER_MEETING = 1000  # a meeting takes this many chunks, then the client opens another
# The server trims its heap every 10 s (server/heap_trim.py): a settled sample is read again
# after one has surely run.
HEAP_TRIM_WAIT_S = 11.0


async def upload(session: aiohttp.ClientSession, base: str, body: bytes, m: str, seq: int) -> None:
    values = {"meeting_id": m, "track": "mic", "seq": str(seq), "start_ms": str(seq * 30_000)}
    headers = {**TUS, "Upload-Length": str(len(body)), "Upload-Metadata": meta(values)}
    async with session.post(base + "/files/", headers=headers) as r:
        assert r.status == 201, await r.text()
        location = r.headers["Location"]
    patch = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    async with session.patch(location, data=body, headers=patch) as r:
        assert r.status == 204, await r.text()


@dataclass
class Samples:
    in_flight: list[dict[str, int]] = field(default_factory=list)
    settled: list[dict[str, int]] = field(default_factory=list)


@dataclass
class Recorder:
    """One client: its meeting and how many chunks it has sent, kept across the pause."""

    meeting: str | None = None
    sent: int = 0


async def run(server: RollscribeServer, body: bytes, total: int) -> Samples:
    """`total` uploads by CLIENTS recorders. RSS is read as each 1,000th upload completes
    (requests of the other clients in flight) and, at 1,000 and at the end, once no request
    is in flight ("settled"), right away and again after the server's next heap trim."""
    samples = Samples()
    done = 0
    lock = asyncio.Lock()
    recorders = [Recorder() for _ in range(CLIENTS)]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:

        async def new_meeting() -> str:
            async with session.post(server.url + "/meetings", json={"tracks": ["mic"]}) as r:
                assert r.status == 201, await r.text()
                return str((await r.json())["id"])

        async def client(recorder: Recorder, until: int) -> None:
            nonlocal done
            while True:
                async with lock:
                    if done >= until:
                        return
                    done += 1
                    mine = done
                seq = recorder.sent % SEQS_PER_MEETING
                if recorder.meeting is None or seq == 0:
                    recorder.meeting = await new_meeting()
                await upload(session, server.url, body, recorder.meeting, seq)
                recorder.sent += 1
                if mine % STEP == 0:
                    samples.in_flight.append(
                        {"uploads": mine, "rss_kib": rss_kib(server.process.pid)}
                    )
                    print(
                        f"{mine:>8} uploads  RSS {samples.in_flight[-1]['rss_kib'] / 1024:7.1f} MiB"
                    )

        async def settled() -> None:
            now = rss_kib(server.process.pid)
            await asyncio.sleep(HEAP_TRIM_WAIT_S)
            later = rss_kib(server.process.pid)
            samples.settled.append({"uploads": done, "rss_kib": now, "rss_kib_after_trim": later})
            print(
                f"{done:>8} uploads, none in flight: RSS {now / 1024:.1f} MiB, "
                f"{later / 1024:.1f} MiB {HEAP_TRIM_WAIT_S:g} s later"
            )

        for until in (min(STEP, total), total):
            await asyncio.gather(*(client(r, until) for r in recorders))
            await settled()
    return samples


def change(first: int, last: int) -> str:
    return f"{first / 1024:.1f} -> {last / 1024:.1f} MiB ({100 * (last - first) / first:+.1f} %)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=100_000)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    try:
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
    finally:
        note_deletions(WORK)  # 100,000 files deleted: small_uploads waits for them to age
    first = next(s["rss_kib"] for s in samples.in_flight if s["uploads"] >= STEP)
    last = samples.in_flight[-1]["rss_kib"]
    start, end = samples.settled[0], samples.settled[-1]
    print(
        f"\nin flight, after {STEP:,} and after {samples.in_flight[-1]['uploads']:,}: "
        f"{change(first, last)}\n"
        f"none in flight, after {start['uploads']:,} and after {end['uploads']:,}: "
        f"{change(start['rss_kib'], end['rss_kib'])}; after the next heap trim "
        f"{change(start['rss_kib_after_trim'], end['rss_kib_after_trim'])}"
    )
    if not args.no_save:
        save_results(
            "upload_memory",
            {"clients": CLIENTS, "samples": samples.in_flight, "settled": samples.settled},
        )


if __name__ == "__main__":
    main()
