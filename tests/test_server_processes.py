"""`rollscribe serve --processes N`: N processes on one port (SO_REUSEPORT) share the work
and the figures; a process that dies is started again; stopping the server stops them all.
(Upload locks across processes: tests/test_multi_node.py, which runs on SQLite too.)"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import create_meeting
from tests.server_process import ROOT, ServerProcess
from tests.test_end_to_end import upload_segment


def server_pids(port: int) -> list[int]:
    """Server processes serving `port`, from /proc (the first and its siblings)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"--port" in argv and str(port).encode() in argv:
            found.append(int(entry.name))
    return sorted(found)


def siblings(port: int) -> list[int]:
    return [
        pid
        for pid in server_pids(port)
        if b"--sibling" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]


def counted_requests(base: str) -> float:
    text = requests.get(base + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("rollscribe_upload_requests_total{")
    )


def listening_sockets(port: int) -> int:
    """Sockets listening on `port` (state 0A in /proc/net/tcp*): one per process that has
    bound it with SO_REUSEPORT."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                count += 1
    return count


@pytest.fixture
def three_processes(tmp_path):
    server = ServerProcess(tmp_path / "data", workers=0, extra=["--processes", "3"]).start()
    # The first process answers before its siblings have bound the port; until they have,
    # the kernel gives every connection to the first.
    deadline = time.monotonic() + 30
    while listening_sockets(server.port) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    yield server
    server.stop()


def test_processes_share_the_port_and_their_counts(three_processes, jfk_segments):
    base = three_processes.url
    assert len(server_pids(three_processes.port)) == 3
    assert listening_sockets(three_processes.port) == 3
    meeting = create_meeting(base, tracks=["mic"])["id"]
    segment = jfk_segments[5.0][0]
    before = counted_requests(base)
    # 40 chunks from 8 clients at once, each client its own connections.
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda seq: upload_segment(
                    base, meeting, "mic", dataclasses.replace(segment, seq=seq), 0
                ),
                range(40),
            )
        )
    view = requests.get(f"{base}/meetings/{meeting}", timeout=10).json()
    assert sorted(c["seq"] for c in view["chunks"]) == list(range(40))
    assert {c["state"] for c in view["chunks"]} <= {"queued", "waiting"}
    # tuspy: a POST and a PATCH per chunk, counted by whichever process served them.
    assert counted_requests(base) - before == 80
    folder = next((three_processes.data_dir / "run").glob("metrics-*"))
    assert len(list(folder.glob("counter_*.db"))) >= 2  # more than one process served


def test_a_process_that_dies_is_started_again(three_processes):
    port = three_processes.port
    victim = siblings(port)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = siblings(port)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.2)
    assert len(siblings(port)) == 2 and victim not in siblings(port)
    for _ in range(20):  # every process answers
        assert requests.get(three_processes.url + "/healthz", timeout=10).status_code == 200


def test_stopping_the_server_stops_every_process(tmp_path):
    server = ServerProcess(tmp_path / "data", workers=0, extra=["--processes", "2"]).start()
    port = server.port
    assert len(server_pids(port)) == 2
    server.stop()  # SIGTERM to the first
    deadline = time.monotonic() + 15
    while server_pids(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server_pids(port) == []
    assert not list((tmp_path / "data" / "run").glob("metrics-*"))


def test_siblings_stop_when_the_first_process_is_killed(tmp_path):
    """SIGKILL gives the first process no chance to stop its siblings: they notice that
    their parent is gone and leave the port instead of serving on alone."""
    server = ServerProcess(tmp_path / "data", workers=0, extra=["--processes", "3"]).start()
    port = server.port
    left = siblings(port)
    assert len(left) == 2
    try:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        deadline = time.monotonic() + 15
        while server_pids(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server_pids(port) == []
    finally:
        for pid in server_pids(port):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.storage_free
@pytest.mark.parametrize("value", ["-1", "two", "²", "Auto", ""])
def test_a_bad_process_count_is_refused(tmp_path, value):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--processes",
            value,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--processes: expected auto or a non-negative integer" in result.stderr


@pytest.mark.storage_free
@pytest.mark.parametrize(
    ("value", "database_url", "cores", "expected"),
    [
        (None, None, 2, 2),  # auto on SQLite (the default): one per core
        (None, "sqlite+aiosqlite:////tmp/x.db", 1, 1),
        (None, None, 32, 4),  # at most MAX_AUTO_PROCESSES
        (None, "postgresql+asyncpg://u:p@127.0.0.1/db", 8, 1),  # auto on PostgreSQL: one
        (0, "postgresql+asyncpg://u:p@127.0.0.1/db", 8, 8),  # 0: one per core, asked for
        (3, None, 2, 3),
    ],
)
def test_the_process_count_auto_means(monkeypatch, value, database_url, cores, expected):
    from server.config import resolve_processes

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert resolve_processes(value, database_url) == expected


@pytest.mark.storage_free
def test_serve_defaults_to_auto(monkeypatch):
    import argparse

    from server.config import add_serve_arguments, config_from_args

    monkeypatch.delenv("ROLLSCRIBE_PROCESSES", raising=False)
    monkeypatch.delenv("ROLLSCRIBE_DATABASE_URL", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([])
    assert args.processes is None  # auto
    assert config_from_args(args).processes == 2
    monkeypatch.setenv("ROLLSCRIBE_PROCESSES", "1")
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert config_from_args(parser.parse_args([])).processes == 1
