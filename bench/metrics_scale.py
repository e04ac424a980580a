"""Benchmark: what a /metrics scrape costs with 10 transcribed chunks and with 1,000,000
(in 10,000 complete meetings), on the embedded default (SQLite). The rows are written
straight into the database, then a server on it is scraped 20 times; median and worst.
Run: `./dev bench metrics_scale` (about a minute to write the rows).
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
from bench.server_under_test import RollscribeServer, save_results

SCRAPES = 20
PER_MEETING = 100


def fill(db_path: Path, chunks: int) -> None:
    """`chunks` transcribed chunks in complete meetings, each with its upload, as the
    server leaves them."""
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA synchronous=OFF")
    meetings = max(1, chunks // PER_MEETING)
    con.executemany(
        "INSERT INTO meetings (id, owner, tracks, gaps, state, created_at, last_served_at, "
        "finalized_at, completed_at) VALUES (?, '', '[\"mic\"]', '[]', 'complete', 0, 0, 1, 3)",
        ((f"m{m}",) for m in range(meetings)),
    )
    con.executemany(
        'INSERT INTO uploads (id, owner, "offset", length, meta, created_at) '
        "VALUES (?, '', 90000, 90000, '{}', 0)",
        ((f"u{i}",) for i in range(chunks)),
    )
    con.executemany(
        "INSERT INTO chunks (meeting_id, track, seq, start_ms, upload_id, state, attempts, "
        "next_attempt_at, created_at, duration_s, uploaded_at, transcribed_at, transcribe_s, "
        "carry_samples, carry_done) VALUES (?, 'mic', ?, ?, ?, 'transcribed', 1, 0, 0, 30.0, "
        "?, ?, 3.0, 0, 1)",
        (
            (f"m{i // PER_MEETING}", i % PER_MEETING, 30000 * (i % PER_MEETING), f"u{i}", i, i + 2)
            for i in range(chunks)
        ),
    )
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


def measure(root: Path, chunks: int) -> dict[str, float]:
    data = root / f"data-{chunks}"
    server = RollscribeServer(data, "--processes", "1")  # makes the schema
    server.stop()
    started = time.monotonic()
    fill(data / "rollscribe.db", chunks)
    fill_s = time.monotonic() - started
    server = RollscribeServer(data, "--processes", "1")
    try:
        scrape_ms(server.url)  # warm
        times = scrape_ms(server.url)
    finally:
        server.stop()
    return {
        "chunks": chunks,
        "fill_s": fill_s,
        "median_ms": statistics.median(times),
        "max_ms": max(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        rows = [measure(Path(tmp), 10), measure(Path(tmp), args.chunks)]
    print(f"\n{'transcribed chunks':>20} {'median ms':>10} {'max ms':>8}")
    for r in rows:
        print(f"{r['chunks']:>20,} {r['median_ms']:>10.1f} {r['max_ms']:>8.1f}")
    if not args.no_save:
        save_results("metrics_scale", {"scrapes": SCRAPES, "rows": rows})


if __name__ == "__main__":
    main()
