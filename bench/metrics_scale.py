"""Benchmark: what a /metrics scrape costs with 10 transcribed chunks and with 1,000,000
(in 10,000 complete meetings), on the embedded default (SQLite). The rows are written
straight into the database, then a server on it is scraped 20 times; median and worst.
Then the same million chunks in 188 meetings still recording (long meetings in short
segments), whose backlog figures read their pending chunks: scrapes, and meeting creations
(which read the backlog for admission); then with 100,000 of those chunks still pending (no
worker has taken them: the backlog a server with its admission limit lifted can hold).
With each, the server's CPU over 10 s when nobody calls it (what its sweeps cost); without
pending chunks, also that of a server with one transcription worker, which looks for a job
every 0.2 s (the server's, the worker's and the validation process's CPU together).
Run: `./dev bench metrics_scale` (about two minutes).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.comparison_servers import WORK
from bench.server_under_test import RollscribeServer, cpu_seconds, save_results

SCRAPES = 20
PER_MEETING = 100


# Live meetings hold more chunks each, and fewer of them: a key may have 200 recording
# meetings, and the run creates a few more.
LIVE_PER_MEETING = 5300
CREATIONS = 5
IDLE_S = 10.0
PENDING = 100_000


def fill(
    db_path: Path,
    chunks: int,
    per_meeting: int = PER_MEETING,
    live: bool = False,
    pending: int = 0,
) -> None:
    """`chunks` transcribed chunks in complete meetings (or, `live`, in meetings still
    recording), each with its upload, as the server leaves them; the last `pending` of them
    (spread over the meetings) not transcribed yet: each meeting's first of those queued,
    the rest waiting behind it."""
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA synchronous=OFF")
    meetings = max(1, -(-chunks // per_meeting))
    con.executemany(
        "INSERT INTO meetings (id, owner, tracks, gaps, state, created_at, last_served_at, "
        "finalized_at, completed_at) VALUES (?, '', '[\"mic\"]', '[]', 'complete', 0, 0, 1, 3)",
        ((f"m{m}",) for m in range(meetings)),
    )
    if live:
        con.execute(
            "UPDATE meetings SET state = 'recording', finalized_at = NULL, completed_at = NULL"
        )
    con.executemany(
        # Kept with their meetings, as the server marks accepted chunks' uploads.
        'INSERT INTO uploads (id, owner, "offset", length, meta, created_at, kept_with_meeting) '
        "VALUES (?, '', 90000, 90000, '{}', 0, 1)",
        ((f"u{i}",) for i in range(chunks)),
    )
    con.executemany(
        "INSERT INTO chunks (meeting_id, track, seq, start_ms, upload_id, state, attempts, "
        "next_attempt_at, created_at, duration_s, uploaded_at, transcribed_at, transcribe_s, "
        "carry_samples, carry_done) VALUES (?, 'mic', ?, ?, ?, 'transcribed', 1, 0, 0, 30.0, "
        "?, ?, 3.0, 0, 1)",
        (
            (f"m{i // per_meeting}", i % per_meeting, 30000 * (i % per_meeting), f"u{i}", i, i + 2)
            for i in range(chunks)
        ),
    )
    if pending:
        first = per_meeting - pending // meetings
        con.execute(
            "UPDATE chunks SET state = 'waiting', transcribed_at = NULL, transcribe_s = NULL "
            "WHERE seq >= ?",
            (first,),
        )
        con.execute("UPDATE chunks SET state = 'queued', queued_at = seq WHERE seq = ?", (first,))
    con.commit()
    con.close()


def scrape_ms(url: str) -> list[float]:
    times = []
    for _ in range(SCRAPES):
        start = time.perf_counter()
        r = requests.get(url + "/metrics", timeout=60)
        times.append(1000 * (time.perf_counter() - start))
        assert r.status_code == 200 and "rollscribe_chunks" in r.text
    return times


def creation_ms(url: str) -> list[float]:
    times = []
    for _ in range(CREATIONS):
        start = time.perf_counter()
        r = requests.post(url + "/meetings", json={}, timeout=60)
        times.append(1000 * (time.perf_counter() - start))
        assert r.status_code == 201, r.text
    return times


def idle_cpu_percent(pid: int, seconds: float = IDLE_S, descendants: bool = False) -> float:
    """The server's CPU while nobody calls it (its sweeps run every 2 s), % of one core;
    with `descendants`, with its workers' (each looks for a job every 0.2 s)."""

    before, started = cpu_seconds(pid, descendants), time.monotonic()
    time.sleep(seconds)
    used_s = cpu_seconds(pid, descendants) - before
    return 100 * used_s / (time.monotonic() - started)


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    """Until /readyz says yes: the worker has its model loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if requests.get(url + "/readyz", timeout=10).status_code == 200:
            return
        time.sleep(0.2)
    raise TimeoutError("no worker became ready")


def measure(root: Path, chunks: int, live: bool = False, pending: int = 0) -> dict[str, object]:
    data = root / f"data-{chunks}{'-live' if live else ''}-{pending}"
    server = RollscribeServer(data, "--processes", "1")  # makes the schema
    server.stop()
    started = time.monotonic()
    fill(data / "rollscribe.db", chunks, LIVE_PER_MEETING if live else PER_MEETING, live, pending)
    fill_s = time.monotonic() - started
    # A backlog this long is over the default admission limit (4 h of audio): lifted, so
    # that creations are measured rather than refused.
    server = RollscribeServer(data, "--processes", "1", "--max-backlog-seconds", "1e12")
    try:
        scrape_ms(server.url)  # warm
        times = scrape_ms(server.url)
        created = creation_ms(server.url) if live else None
        idle = idle_cpu_percent(server.pid)
    finally:
        server.stop()
    with_worker = None
    if not pending:  # pending chunks would be taken (their bytes were never written)
        server = RollscribeServer(
            data, "--processes", "1", "--max-backlog-seconds", "1e12", "--workers", "1"
        )
        try:
            wait_ready(server.url)
            with_worker = idle_cpu_percent(server.pid, descendants=True)
        finally:
            server.stop()
    return {
        "chunks": chunks,
        "meetings": "recording" if live else "complete",
        "pending": pending,
        "fill_s": fill_s,
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "creation_median_ms": None if created is None else statistics.median(created),
        "idle_cpu_percent": idle,
        "idle_cpu_percent_with_worker": with_worker,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        rows = [
            measure(Path(tmp), 10),
            measure(Path(tmp), args.chunks),
            measure(Path(tmp), args.chunks, live=True),
            measure(Path(tmp), args.chunks, live=True, pending=PENDING),
        ]
    print(
        f"\n{'chunks':>20} {'pending':>8} {'meetings':>10} {'median ms':>10} {'max ms':>8} "
        f"{'POST /meetings ms':>18} {'idle CPU %':>10} {'with a worker %':>16}"
    )
    for r in rows:
        created = r["creation_median_ms"]
        worker = r["idle_cpu_percent_with_worker"]
        print(
            f"{r['chunks']:>20,} {r['pending']:>8,} {r['meetings']:>10} {r['median_ms']:>10.1f} "
            f"{r['max_ms']:>8.1f} {'' if created is None else f'{created:.1f}':>18} "
            f"{r['idle_cpu_percent']:>10.1f} {'' if worker is None else f'{worker:.1f}':>16}"
        )
    if not args.no_save:
        save_results("metrics_scale", {"scrapes": SCRAPES, "rows": rows})


if __name__ == "__main__":
    main()
