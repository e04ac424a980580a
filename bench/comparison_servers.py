"""The tus servers rollscribe is compared with, started on loopback for a benchmark:
@tus/server + @tus/file-store (the official Node server, npm) and tuspyserver (PyPI, run
in its own small virtualenv so the project's stays clean)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.server_under_test import RollscribeServer, free_port

HERE = Path(__file__).parent
WORK = HERE / "work"


def setup() -> Path:
    """Installs what the other servers need (once); returns tuspyserver's python."""
    if not (HERE / "js" / "node_modules").exists():
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund"], cwd=HERE / "js", check=True
        )
    venv = WORK / "tuspyserver-venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "tuspyserver==4.4.3", "uvicorn"],
            check=True,
        )
    return venv / "bin" / "python"


@dataclass
class RunningServer:
    name: str
    url: str  # the creation endpoint, ending in /files/
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.options(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise TimeoutError(url)


def _start(name: str, cmd: list[str], port: int, cwd: Path) -> RunningServer:
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/files/"
    _wait(url)
    return RunningServer(name, url, process)


def start_all(root: Path, *rollscribe_flags: str) -> list[RunningServer]:
    """rollscribe, @tus/server and tuspyserver, each with its own folder under `root`."""
    tuspyserver_python = setup()
    for name in ("rs", "node", "py"):
        (root / name).mkdir(exist_ok=True)
    rs = RollscribeServer(root / "rs", *rollscribe_flags)
    servers = [RunningServer("rollscribe", rs.url + "/files/", rs.process)]
    try:
        port = free_port()
        servers.append(
            _start(
                "@tus/server",
                ["node", "tus_node_server.mjs", str(port), str(root / "node")],
                port,
                HERE / "js",
            )
        )
        port = free_port()
        servers.append(
            _start(
                "tuspyserver",
                [
                    str(tuspyserver_python),
                    str(HERE / "tuspyserver_app.py"),
                    str(port),
                    str(root / "py"),
                ],
                port,
                HERE,
            )
        )
    except BaseException:
        # A server that did not start leaves none running (they outlive this process).
        for srv in servers:
            srv.stop()
        raise
    return servers
