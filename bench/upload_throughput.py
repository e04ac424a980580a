"""Benchmark: tuspy uploading 200 MB with 1, 5 and 50 MiB chunks to rollscribe, to
@tus/server + @tus/file-store (the official Node server) and to tuspyserver (Python),
each started here on loopback, in rotating order, four rounds. Run:
`./dev bench upload_throughput` (a few minutes; sets up node_modules and a small venv).

rollscribe fsyncs every acknowledged byte (data and offset) before it answers; the others
do not. The figures are reported as they are.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import requests
from tusclient import client as tus_client

from bench.comparison_servers import WORK, start_all
from bench.server_under_test import save_results

SIZE = 200 * 10**6
CHUNKS_MIB = (1, 5, 50)
# Rounds of one server move by 15 % and more here (@tus/server 172 and 216 MB/s at 1 MiB in
# one run): four, in rotating order, so that each server goes first, and the best compared.
ROUNDS = 4


def upload(url: str, path: Path, chunk_mib: int) -> float:
    start = time.monotonic()
    # A filename for all: tuspy sends an empty Upload-Metadata header otherwise, which
    # @tus/server refuses (400); rollscribe and tuspyserver accept it.
    uploader = tus_client.TusClient(url).uploader(
        str(path), chunk_size=chunk_mib * 1024**2, metadata={"filename": path.name}
    )
    uploader.upload()
    rate = SIZE / 1e6 / (time.monotonic() - start)
    # Termination (all three implement it) keeps the disk from filling up between runs.
    requests.delete(uploader.url, headers={"Tus-Resumable": "1.0.0"}, timeout=60)
    return rate


def main() -> None:
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        with open(source, "wb") as f:
            block = os.urandom(1024**2)
            for _ in range(SIZE // len(block)):
                f.write(block)
            f.write(block[: SIZE % len(block)])
        started = start_all(root)
        servers = [(srv.name, srv.url) for srv in started]
        results: dict[tuple[str, int], list[float]] = {}
        try:
            for rnd in range(ROUNDS):
                for chunk in CHUNKS_MIB:
                    order = servers[rnd % 3 :] + servers[: rnd % 3]  # rotate who goes first
                    for name, url in order:
                        results.setdefault((name, chunk), []).append(upload(url, source, chunk))
        finally:
            for srv in started:
                srv.stop()
    rows = []
    print(f"\ntuspy uploading {SIZE // 10**6} MB, best of {ROUNDS} rounds, MB/s\n")
    print(
        f"{'chunk':>7} {'rollscribe':>11} {'@tus/server':>12} {'tuspyserver':>12} "
        f"{'rs/@tus':>8} {'rs/tuspy':>9}"
    )
    for chunk in CHUNKS_MIB:
        best = {name: max(results[(name, chunk)]) for name, _ in servers}
        rows.append(
            {
                "chunk_mib": chunk,
                "mb_per_s": best,
                "all_runs": {name: results[(name, chunk)] for name, _ in servers},
                "median": {name: statistics.median(results[(name, chunk)]) for name, _ in servers},
            }
        )
        print(
            f"{chunk:>5} MiB {best['rollscribe']:11.0f} {best['@tus/server']:12.0f} "
            f"{best['tuspyserver']:12.0f} {best['rollscribe'] / best['@tus/server']:7.2f}x "
            f"{best['rollscribe'] / best['tuspyserver']:8.2f}x"
        )
    save_results(
        "upload_throughput",
        {
            "size_bytes": SIZE,
            "rows": rows,
            "note": "rollscribe fsyncs data and offset before acknowledging; the others do not",
        },
    )


if __name__ == "__main__":
    main()
