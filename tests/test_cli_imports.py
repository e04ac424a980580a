"""`rollscribe COMMAND` imports what that command needs and nothing of the others
(server/cli.py): a server loaded the Discord library and the recorder's audio stack at every
start, and `rollscribe keys list` the web framework and the ORM (1.3 s of CPU where 0.2 s
does)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server_process import ROOT

pytestmark = pytest.mark.storage_free

# Runs `main(argv)` (a SystemExit is the command's own end), then prints which of the
# watched modules got imported.
PROBE = """
import json, sys
from server.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
watched = ("aiohttp", "sqlalchemy", "discord", "client.recorder", "faster_whisper")
print(json.dumps([name for name in watched if name in sys.modules]))
"""


def _imported(*argv: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_keys_loads_neither_the_web_framework_nor_the_database(tmp_path: Path) -> None:
    assert _imported("keys", "list", "--file", str(tmp_path / "keys")) == []


def test_serve_loads_neither_the_bot_nor_the_recorder(tmp_path: Path) -> None:
    # --help: the serve command's whole parser, without starting a server.
    assert _imported("serve", "--help") == ["aiohttp", "sqlalchemy"]


def test_the_top_level_help_loads_no_command() -> None:
    assert _imported("--help") == []


def test_every_command_still_has_its_arguments() -> None:
    for command, flag in (
        ("serve", "--max-backlog-seconds"),
        ("worker", "--lease-seconds"),
        ("record", "--spool"),
        ("discord", "--token-file"),
        ("keys", "revoke"),
        ("db", "--database-url"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and flag in result.stdout, (command, result.stderr)
