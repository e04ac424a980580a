"""Benchmark: peak server memory while uploading, which must not grow with upload size.

Measures rollscribe's resident memory (VmRSS sampled every 50 ms) idle, during one 200 MB
upload, during one 2 GB upload, and during 200 concurrent 5 MiB uploads. Run:
`./dev bench memory` (about a minute; needs ~3 GB of free disk).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.server_under_test import (
    RollscribeServer,
    RssSampler,
    rss_kib,
    save_results,
)

TUS = {"Tus-Resumable": "1.0.0"}
BLOCK = bytes(range(256)) * 4096  # 1 MiB


class Body:
    """A sized, streamed request body: requests sends it with Content-Length, read by read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        while piece := self.read(len(BLOCK)):
            yield piece

    def read(self, n: int = -1) -> bytes:
        n = len(BLOCK) if n < 0 else min(n, len(BLOCK))
        piece = BLOCK[: min(n, self.size - self.sent)]
        self.sent += len(piece)
        return piece


def upload(base: str, size: int) -> None:
    r = requests.post(base + "/files/", headers={**TUS, "Upload-Length": str(size)}, timeout=30)
    r.raise_for_status()
    r = requests.patch(
        r.headers["Location"],
        data=Body(size),
        timeout=600,
        headers={
            **TUS,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status_code == 204, r.text


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent.parent) as tmp:
        server = RollscribeServer(
            # One process: its RSS is the server's.
            Path(tmp) / "data",
            "--max-upload-bytes",
            str(3 * 1024**3),
            "--processes",
            "1",
        )
        try:
            time.sleep(1.0)
            rows.append(
                {
                    "scenario": "idle",
                    "peak_rss_mib": rss_kib(server.pid) / 1024,
                    "seconds": 0.0,
                    "mb_per_s": None,
                }
            )
            for label, size in (("one 200 MB upload", 200 * 10**6), ("one 2 GB upload", 2 * 10**9)):
                with RssSampler(server.pid) as rss:
                    start = time.monotonic()
                    upload(server.url, size)
                    elapsed = time.monotonic() - start
                rows.append(
                    {
                        "scenario": label,
                        "peak_rss_mib": rss.peak / 1024,
                        "seconds": elapsed,
                        "mb_per_s": size / 1e6 / elapsed,
                    }
                )
            with RssSampler(server.pid) as rss, ThreadPoolExecutor(200) as pool:
                start = time.monotonic()
                list(pool.map(lambda _: upload(server.url, 5 * 1024**2), range(200)))
                elapsed = time.monotonic() - start
            rows.append(
                {
                    "scenario": "200 concurrent 5 MiB uploads",
                    "peak_rss_mib": rss.peak / 1024,
                    "seconds": elapsed,
                    "mb_per_s": 200 * 5 * 1.048576 / elapsed,
                }
            )
        finally:
            server.stop()
    print(f"\n{'scenario':32} {'peak RSS MiB':>13} {'seconds':>8} {'MB/s':>7}")
    for r in rows:
        rate = f"{r['mb_per_s']:.0f}" if r["mb_per_s"] else "-"
        print(f"{r['scenario']:32} {r['peak_rss_mib']:13.1f} {r['seconds']:8.1f} {rate:>7}")
    growth = rows[2]["peak_rss_mib"] - rows[1]["peak_rss_mib"]
    print(f"\npeak RSS, 2 GB upload minus 200 MB upload: {growth:+.1f} MiB (flat if near 0)")
    save_results("memory", {"rows": rows, "growth_2gb_vs_200mb_mib": growth})


if __name__ == "__main__":
    main()
