"""Benchmark: 200 concurrent clients each uploading 30 s Ogg Opus segments (~100 KB) as
fast as they can, to rollscribe, @tus/server and tuspyserver: requests per second and
upload latency (POST + PATCH) percentiles. Run: `./dev bench small_uploads`.

For rollscribe each upload is a real meeting chunk (meeting, track, seq metadata), so it is
validated as Ogg Opus and queued: the production path, with every acknowledgement fsynced.
The load is generated with aiohttp, not 200 tuspy threads, so the client is not the limit.
With `--postgres URL` (or ROLLSCRIBE_BENCH_POSTGRES) rollscribe also runs on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from bench.comparison_servers import WORK, RunningServer, start_all
from bench.server_under_test import (
    RollscribeServer,
    cpu_seconds,
    fresh_postgres_database,
    save_results,
)
from codec.segmenter import OggOpusFileWriter, iter_pcm

JFK = Path(__file__).resolve().parents[2] / "shared" / "data" / "jfk.flac"
CLIENTS = 200
UPLOADS_PER_CLIENT = 10
TUS = {"Tus-Resumable": "1.0.0"}
ASYNCIO_ROW = "rollscribe, asyncio event loop"
WARM_UP_SEQ = 1000


def segment(folder: Path) -> bytes:
    pcm = np.concatenate(list(iter_pcm(JFK)))
    writer = OggOpusFileWriter(folder / "seg.opus")
    writer.write(np.tile(pcm, 3)[: 30 * 48000])
    writer.close()
    return writer.path.read_bytes()


def meta(values: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def client(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    meeting: str | None,
    client_no: int,
    latencies: list[float],
    uploads: int = UPLOADS_PER_CLIENT,
    first_seq: int = 0,
) -> None:
    for seq in range(first_seq, first_seq + uploads):
        values = {"filename": f"c{client_no}-{seq}.opus"}
        if meeting is not None:
            values |= {
                "meeting_id": meeting,
                "track": "mic",
                "seq": str(seq),
                "start_ms": str(seq * 30_000),
            }
        start = time.monotonic()
        async with session.post(
            url, headers={**TUS, "Upload-Length": str(len(body)), "Upload-Metadata": meta(values)}
        ) as r:
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
        async with session.patch(
            location,
            data=body,
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        ) as r:
            assert r.status == 204, await r.text()
        latencies.append(time.monotonic() - start)


async def run(
    url: str,
    body: bytes,
    meetings: list[str | None],
    uploads: int = UPLOADS_PER_CLIENT,
    first_seq: int = 0,
) -> dict[str, float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        start = time.monotonic()
        await asyncio.gather(
            *(
                client(session, url, body, meetings[i], i, latencies, uploads, first_seq)
                for i in range(CLIENTS)
            )
        )
        elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "uploads": len(latencies),
        "seconds": elapsed,
        "requests_per_s": 2 * len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
    }


async def make_meetings(base: str) -> list[str | None]:
    async with aiohttp.ClientSession() as session:
        out: list[str | None] = []
        for _ in range(CLIENTS):
            async with session.post(base + "/meetings", json={"tracks": ["mic"]}) as r:
                out.append((await r.json())["id"])
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ROLLSCRIBE_BENCH_POSTGRES"),
        help="a PostgreSQL server URL without a database (postgresql+asyncpg://user:pw@host:"
        "port): adds rollscribe on PostgreSQL, one process and one per core, each on a "
        "fresh database",
    )
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    rows = {}
    with tempfile.TemporaryDirectory(dir=WORK) as tmp, contextlib.ExitStack() as running:
        root = Path(tmp)
        body = segment(root)
        # Each server is stopped when the run ends, however it ends (servers outlive this
        # process, and an error starting the next one would leave them running).
        servers = start_all(root)  # rollscribe as it starts by default: one process
        for srv in servers:
            running.callback(srv.stop)
        # The same server with a process per core, side by side.
        several = RollscribeServer(root / "rsn", "--processes", "0")
        name = f"rollscribe, {os.cpu_count()} processes"
        servers.insert(1, RunningServer(name, several.url + "/files/", several.process))
        running.callback(servers[1].stop)
        # The default again on the standard library's event loop: what uvloop buys.
        stdlib_loop = RollscribeServer(root / "rsa", "--processes", "1", "--event-loop", "asyncio")
        servers.insert(
            1,
            RunningServer(ASYNCIO_ROW, stdlib_loop.url + "/files/", stdlib_loop.process),
        )
        running.callback(servers[1].stop)
        if args.postgres:
            for label, processes in (("1 process", "1"), (f"{os.cpu_count()} processes", "0")):
                url = running.enter_context(fresh_postgres_database(args.postgres))
                on_pg = RollscribeServer(
                    root / f"pg{processes}", "--processes", processes, "--database-url", url
                )
                servers.insert(
                    2,
                    RunningServer(f"rollscribe PG, {label}", on_pg.url + "/files/", on_pg.process),
                )
                running.callback(servers[2].stop)
        for srv in servers:
            meetings: list[str | None] = [None] * CLIENTS
            if srv.name.startswith("rollscribe"):
                meetings = asyncio.run(make_meetings(srv.url.removesuffix("/files/")))
            # Every server warmed alike first, one upload per client (for rollscribe a chunk
            # far past the measured ones): the first server measured used to pay for its
            # cold start (its first connections, files and pages) and the client's.
            asyncio.run(run(srv.url, body, meetings, uploads=1, first_seq=WARM_UP_SEQ))
            cpu_before = cpu_seconds(srv.process.pid, descendants=True)
            rows[srv.name] = asyncio.run(run(srv.url, body, meetings))
            used = cpu_seconds(srv.process.pid, descendants=True) - cpu_before
            rows[srv.name]["server_cpu_ms_per_upload"] = 1000 * used / rows[srv.name]["uploads"]
    print(
        f"\n{CLIENTS} clients x {UPLOADS_PER_CLIENT} uploads of a {len(body) // 1000} KB "
        "30 s Ogg Opus segment (POST + PATCH each)\n"
    )
    print(
        f"{'server':34} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'CPU ms/upload':>13}"
    )
    for name, r in rows.items():
        print(
            f"{name:34} {r['requests_per_s']:7.0f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f} "
            f"{r['max_ms']:8.0f} {r['server_cpu_ms_per_upload']:13.1f}"
        )
    rs = rows["rollscribe"]["requests_per_s"]
    node = rows["@tus/server"]["requests_per_s"]
    py = rows["tuspyserver"]["requests_per_s"]
    many = rows[f"rollscribe, {os.cpu_count()} processes"]["requests_per_s"]
    stdlib = rows[ASYNCIO_ROW]["requests_per_s"]
    print(
        f"\nreq/s: rollscribe / @tus/server {rs / node:.2f}x, / tuspyserver {rs / py:.2f}x; "
        f"{os.cpu_count()} processes / @tus/server {many / node:.2f}x; "
        f"uvloop / asyncio's loop {rs / stdlib:.2f}x"
    )
    save_results(
        "small_uploads",
        {
            "segment_bytes": len(body),
            "clients": CLIENTS,
            "uploads_per_client": UPLOADS_PER_CLIENT,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
