"""Starts a rollscribe server for a benchmark, reads its memory from /proc, and writes a
benchmark's results (with the date and the machine) under bench/results/."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid: int) -> list[str]:
    # After the command's closing parenthesis (a command may hold spaces and parentheses).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, descendants: bool = False) -> float:
    """User + system CPU of a process (all its threads) from /proc; with `descendants`, also
    that of the processes it started that are still running (rollscribe's validation pool
    and sibling servers) and of those it has reaped."""
    pids = [pid]
    if descendants:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
                except (OSError, IndexError, ValueError):
                    continue  # gone meanwhile
        frontier = [pid]
        while frontier:
            children = [p for p, parent in parents.items() if parent in frontier]
            pids += children
            frontier = children
    ticks = 0
    for p in pids:
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
        if descendants:
            ticks += int(fields[13]) + int(fields[14])  # cutime + cstime: reaped children
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Peak resident memory of a process while a block runs, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class RollscribeServer:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--workers",
                "0",
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.process.kill()  # not left running behind the benchmark
        self.process.wait()
        raise TimeoutError("rollscribe did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(20)


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at `server_url` (no database name,
    e.g. postgresql+asyncpg://rollscribe:rollscribe@127.0.0.1:5432); dropped afterwards."""
    import asyncio

    import asyncpg

    admin = server_url.rstrip("/").replace("+asyncpg", "") + "/postgres"
    name = f"bench_{secrets.token_hex(6)}"

    async def sql(statement: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(sql(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server_url.rstrip('/')}/{name}"
    finally:
        asyncio.run(sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def machine() -> dict[str, object]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def wait_for_worker(data_dir: Path, timeout: float = 120.0) -> None:
    """Until a worker of the server's pool has its model loaded (its ready marker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any((data_dir / "workers").glob("*")):
            return
        time.sleep(0.2)
    raise TimeoutError("no worker became ready")


def save_results(name: str, fields: dict[str, object]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **fields,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2))
    return path
