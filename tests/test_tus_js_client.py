"""tus-js-client, driven by node, uploads (and resumes) a chunk unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import TUS, create_meeting

JS = Path(__file__).parent / "js"

pytestmark = pytest.mark.node


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_tus_js_client_uploads_and_resumes_a_chunk(protocol_server, jfk_segments):
    segment = jfk_segments[5.0][0]
    meeting = create_meeting(protocol_server.url, tracks=["mic"])
    meta = {
        "meeting_id": meeting["id"],
        "track": "mic",
        "seq": "0",
        "start_ms": "0",
        "filename": segment.path.name,
        "filetype": "audio/ogg",
    }
    out = subprocess.run(
        [
            "node",
            str(JS / "upload.mjs"),
            protocol_server.url + "/files/",
            str(segment.path),
            json.dumps(meta),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["url"] == result["firstUrl"]  # resumed the same upload, no second one
    stored = requests.get(result["url"], headers=TUS, timeout=10).content
    assert stored == segment.path.read_bytes()
    view = requests.get(f"{protocol_server.url}/meetings/{meeting['id']}", timeout=10).json()
    assert [(c["seq"], c["state"]) for c in view["chunks"]] == [(0, "queued")]
