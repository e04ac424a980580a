"""The server's event loop: uvloop by default, the standard library's on request
(`--event-loop asyncio`); each server process of a port runs the one asked for, serves
uploads and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import uvloop

from server.event_loop import new_event_loop, run_on
from tests.conftest import create_meeting
from tests.server_process import ROOT, ServerProcess
from tests.test_end_to_end import upload_segment
from tests.test_server_processes import listening_sockets, server_pids


@pytest.mark.storage_free
def test_the_named_loop_is_made():
    for name, kind in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = new_event_loop(name)
        try:
            assert isinstance(loop, kind)
            assert (name == "uvloop") == isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        new_event_loop("trio")


@pytest.mark.storage_free
def test_run_on_runs_the_coroutine_on_that_loop():
    async def kind() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert run_on("uvloop", kind()).startswith("uvloop")
    assert run_on("asyncio", kind()).startswith("asyncio")


def uses_uvloop(pid: int) -> bool:
    """Whether uvloop's extension is mapped into the process (it is imported only to make
    its loop)."""
    return "uvloop" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("loop", [None, "asyncio"])
def test_every_process_runs_the_loop_asked_for(tmp_path, jfk_segments, loop):
    extra = ["--processes", "2", *(["--event-loop", loop] if loop else [])]
    server = ServerProcess(tmp_path / "data", workers=0, extra=extra).start()
    try:
        deadline = time.monotonic() + 30
        while listening_sockets(server.port) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = server_pids(server.port)
        assert len(pids) == 2
        assert [uses_uvloop(pid) for pid in pids] == [loop is None] * 2
        log = (tmp_path / f"server-{server.port}.log").read_text()
        assert f"event loop {loop or 'uvloop'})" in log

        meeting = create_meeting(server.url, tracks=["mic"])["id"]
        segment = jfk_segments[5.0][0]
        for seq in range(4):
            upload_segment(server.url, meeting, "mic", dataclasses.replace(segment, seq=seq), 0)
        view = requests.get(f"{server.url}/meetings/{meeting}", timeout=10).json()
        assert sorted(c["seq"] for c in view["chunks"]) == [0, 1, 2, 3]
        assert {c["state"] for c in view["chunks"]} <= {"queued", "waiting"}
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0


def serve(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--data-dir", str(tmp_path), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.storage_free
def test_an_unknown_loop_is_refused(tmp_path):
    flag = serve(tmp_path, "--event-loop", "trio")
    assert flag.returncode == 2
    assert "--event-loop: invalid choice: 'trio'" in flag.stderr
    from_env = serve(tmp_path, ROLLSCRIBE_EVENT_LOOP="trio")
    assert from_env.returncode == 2
    assert "ROLLSCRIBE_EVENT_LOOP: 'trio' is not one of uvloop, asyncio" in from_env.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was made
