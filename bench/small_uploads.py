"""Benchmark: 200 concurrent clients each uploading 30 s Ogg Opus segments (~100 KB) as
fast as they can, to rollscribe, @tus/server and tuspyserver: requests per second and
upload latency (POST + PATCH) percentiles. Run: `./dev bench small_uploads`.

For rollscribe each upload is a real meeting chunk (meeting, track, seq metadata), so it is
validated as Ogg Opus and queued: the production path, with every acknowledgement fsynced.
The load is generated with aiohttp, not 200 tuspy threads, so the client is not the limit.
With `--postgres URL` (or ROLLSCRIBE_BENCH_POSTGRES) rollscribe also runs on PostgreSQL.
Every server is measured in `--rounds` rounds (3) that interleave the servers, and their
medians are compared; a run waits first until the files the last run deleted are six
minutes old (`bench/deleted_files.py`).
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
from typing import Any

import aiohttp
import numpy as np

from bench.comparison_servers import WORK, RunningServer, start_all
from bench.deleted_files import note_deletions, wait_for_deletions_to_age
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
ONE_PROCESS_ROW = "rollscribe, 1 process"
WARM_UP_SEQ = 1000
# Each server is measured this many times, in rounds that interleave the servers. Measured
# once each, one after another, the first server paid for what the machine did before the
# run: on this machine's ext4 (no journal) every file created scans the inodes deleted in
# the last one to six minutes (the kernel's `recently_deleted`), so right after a run's work
# folder (tens of thousands of files) was deleted a server that makes a file per upload
# spent about 1.5 times the CPU per upload for a few minutes (`bench/README.md`, "Many small
# uploads"). Rounds put such stretches on each server in turn; the medians are compared.
ROUNDS = 3
# Admission off for rollscribe: each round opens 200 more meetings (a chunk key is uploaded
# once), past the default 200 open meetings per key, and with no transcription workers
# (the benchmark measures ingest) the 30 s chunks only add to the backlog, past the
# default 4 hours after the first round. Admission's own cost per upload stays.
NO_ADMISSION_LIMITS = ("--max-open-meetings-per-key", "0", "--max-backlog-seconds", "1e9")


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


def summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """A server's rounds: the median of each figure (the largest max), and every round."""
    out: dict[str, Any] = {
        key: statistics.median(r[key] for r in rounds)
        for key in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_upload")
    }
    out["max_ms"] = max(r["max_ms"] for r in rounds)
    out["uploads"] = sum(r["uploads"] for r in rounds)
    out["rounds"] = rounds
    return out


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
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"how many times each server is measured, interleaved (default {ROUNDS})",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    WORK.mkdir(exist_ok=True)
    wait_for_deletions_to_age(WORK)
    try:
        rows, measured, segment_bytes = measure(args)
    finally:
        note_deletions(WORK)  # the work folder is gone: the next run waits for it to age
    report(args, rows, measured, segment_bytes)


def measure(
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, float]]], int]:
    """Every server side by side, in rounds: each server's summary, its rounds, and the
    segment's size."""
    with tempfile.TemporaryDirectory(dir=WORK) as tmp, contextlib.ExitStack() as running:
        root = Path(tmp)
        body = segment(root)
        # Each server is stopped when the run ends, however it ends (servers outlive this
        # process, and an error starting the next one would leave them running).
        # rollscribe as it starts by default (`--processes auto`: one per core on SQLite, at
        # most 4), but for admission's limits.
        servers = start_all(root, *NO_ADMISSION_LIMITS)
        for srv in servers:
            running.callback(srv.stop)
        # The same server in one process, side by side.
        one = RollscribeServer(root / "rs1", "--processes", "1", *NO_ADMISSION_LIMITS)
        servers.insert(1, RunningServer(ONE_PROCESS_ROW, one.url + "/files/", one.process))
        running.callback(servers[1].stop)
        # The default again on the standard library's event loop: what uvloop buys.
        stdlib_loop = RollscribeServer(
            root / "rsa", "--event-loop", "asyncio", *NO_ADMISSION_LIMITS
        )
        servers.insert(
            1,
            RunningServer(ASYNCIO_ROW, stdlib_loop.url + "/files/", stdlib_loop.process),
        )
        running.callback(servers[1].stop)
        if args.postgres:
            for label, processes in (("1 process", "1"), (f"{os.cpu_count()} processes", "0")):
                url = running.enter_context(fresh_postgres_database(args.postgres))
                on_pg = RollscribeServer(
                    root / f"pg{processes}",
                    "--processes",
                    processes,
                    "--database-url",
                    url,
                    *NO_ADMISSION_LIMITS,
                )
                servers.insert(
                    2,
                    RunningServer(f"rollscribe PG, {label}", on_pg.url + "/files/", on_pg.process),
                )
                running.callback(servers[2].stop)

        def meetings_for(srv: RunningServer) -> list[str | None]:
            """Fresh meetings for each of rollscribe's rounds (a chunk key is uploaded
            once); the plain tus servers take uploads without them."""
            if srv.name.startswith("rollscribe"):
                return asyncio.run(make_meetings(srv.url.removesuffix("/files/")))
            return [None] * CLIENTS

        for srv in servers:
            # Every server warmed alike first, one upload per client (for rollscribe a chunk
            # far past the measured ones): the first server measured used to pay for its
            # cold start (its first connections, files and pages) and the client's.
            asyncio.run(run(srv.url, body, meetings_for(srv), uploads=1, first_seq=WARM_UP_SEQ))
        measured: dict[str, list[dict[str, float]]] = {srv.name: [] for srv in servers}
        for round_no in range(args.rounds):
            # Rounds interleave the servers and each round starts one server later: what the
            # machine does for a while (see `ROUNDS`) falls on each server in turn, never on
            # the same one.
            shift = round_no % len(servers)
            for srv in servers[shift:] + servers[:shift]:
                meetings = meetings_for(srv)
                cpu_before = cpu_seconds(srv.process.pid, descendants=True)
                row = asyncio.run(run(srv.url, body, meetings))
                used = cpu_seconds(srv.process.pid, descendants=True) - cpu_before
                row["server_cpu_ms_per_upload"] = 1000 * used / row["uploads"]
                measured[srv.name].append(row)
        rows = {name: summary(rounds) for name, rounds in measured.items()}
        return rows, measured, len(body)


def report(
    args: argparse.Namespace,
    rows: dict[str, dict[str, Any]],
    measured: dict[str, list[dict[str, float]]],
    segment_bytes: int,
) -> None:
    print(
        f"\n{CLIENTS} clients x {UPLOADS_PER_CLIENT} uploads of a {segment_bytes // 1000} KB "
        f"30 s Ogg Opus segment (POST + PATCH each), {args.rounds} interleaved rounds: "
        "medians\n"
    )
    print(
        f"{'server':34} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'CPU ms/upload':>13}  req/s by round"
    )
    for name, r in rows.items():
        by_round = " ".join(f"{x['requests_per_s']:.0f}" for x in measured[name])
        print(
            f"{name:34} {r['requests_per_s']:7.0f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f} "
            f"{r['max_ms']:8.0f} {r['server_cpu_ms_per_upload']:13.1f}  {by_round}"
        )

    def ratio(name: str, peer: str) -> str:
        """Medians' ratio, and each round's (in a round the two ran minutes apart at most)."""
        mine, theirs = measured[name], measured[peer]
        each = ", ".join(
            f"{a['requests_per_s'] / b['requests_per_s']:.2f}x"
            for a, b in zip(mine, theirs, strict=True)
        )
        median = rows[name]["requests_per_s"] / rows[peer]["requests_per_s"]
        return f"{median:.2f}x (rounds {each})"

    print(
        f"\nreq/s: rollscribe / @tus/server {ratio('rollscribe', '@tus/server')}; "
        f"/ tuspyserver {ratio('rollscribe', 'tuspyserver')}\n"
        f"1 process / @tus/server {ratio(ONE_PROCESS_ROW, '@tus/server')}; "
        f"default / 1 process {ratio('rollscribe', ONE_PROCESS_ROW)}; "
        f"uvloop / asyncio's loop {ratio('rollscribe', ASYNCIO_ROW)}"
    )
    p99 = {name: rows[name]["p99_ms"] for name in ("rollscribe", ONE_PROCESS_ROW, "@tus/server")}
    print(
        f"p99, medians: rollscribe {p99['rollscribe']:.0f} ms, "
        f"1 process {p99[ONE_PROCESS_ROW]:.0f} ms, @tus/server {p99['@tus/server']:.0f} ms"
    )
    save_results(
        "small_uploads",
        {
            "segment_bytes": segment_bytes,
            "clients": CLIENTS,
            "uploads_per_client": UPLOADS_PER_CLIENT,
            "rounds": args.rounds,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
