"""Chunks that lie about their length: each is rejected with a reason before any worker
decodes it, and nothing else is affected."""

from __future__ import annotations

import requests

from codec.ogg_mux import OggOpusMuxer
from codec.opus_packets import SILENCE_FRAME
from tests.conftest import create_meeting, metadata, tus_create, tus_patch
from tests.server_process import ServerProcess

FRAME = 960  # 20 ms at 48 kHz


def _ogg(packets: int, last_granule: int | None = None) -> bytes:
    """Discord's 3-byte silence frames, muxed; the last page's granule as given."""
    mux = OggOpusMuxer(serial=7)
    out = bytearray()
    for i in range(1, packets + 1):
        granule = mux.pre_skip + i * FRAME
        if i == packets and last_granule is not None:
            granule = last_granule
        out += mux.write_packet(SILENCE_FRAME, granule)
    return bytes(out + mux.close())


def _send(base: str, meeting_id: str, seq: int, body: bytes) -> dict:
    meta = metadata(meeting_id=meeting_id, track="mic", seq=seq, start_ms=seq * 1000)
    url = tus_create(base, len(body), meta).headers["Location"]
    assert tus_patch(url, 0, body).status_code == 204
    chunks = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()["chunks"]
    return next(c for c in chunks if c["seq"] == seq)


def test_a_chunk_whose_granule_claims_100_hours(protocol_server):
    base = protocol_server.url
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    body = _ogg(1000, last_granule=100 * 3600 * 48000)  # 20 s of packets
    assert len(body) < 20_000
    chunk = _send(base, meeting_id, 1, body)  # seq 0 never sent
    assert chunk["state"] == "rejected"
    assert "claims 360000.0 s" in chunk["error"] and "hold 20.0 s" in chunk["error"]
    # The honest version of the same chunk is accepted.
    assert _send(base, meeting_id, 0, _ogg(1000))["state"] in ("queued", "uploaded")


def test_a_chunk_longer_than_max_chunk_seconds(protocol_server):
    base = protocol_server.url
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    body = _ogg(40 * 60 * 50)  # 40 minutes of silence frames, honest granules
    assert len(body) < 600_000
    chunk = _send(base, meeting_id, 0, body)
    assert chunk["state"] == "rejected"
    assert "2400.0 s" in chunk["error"] and "--max-chunk-seconds" in chunk["error"]
    # Not counted as backlog: new meetings are still welcome.
    assert create_meeting(base, tracks=["mic"])["id"]


def test_a_chunk_waiting_for_a_predecessor_does_not_fill_the_backlog(tmp_path):
    server = ServerProcess(
        tmp_path / "data", workers=0, extra=["--max-backlog-seconds", "30"]
    ).start()
    try:
        base = server.url
        meeting_id = create_meeting(base, tracks=["mic"])["id"]
        for seq in (1, 2):  # seq 0 never comes: 40 s of audio that no worker can take
            assert _send(base, meeting_id, seq, _ogg(1000))["state"] == "waiting"
        assert requests.post(base + "/meetings", json={}, timeout=10).status_code == 201
        assert requests.get(base + "/readyz", timeout=10).status_code == 200
        # Once seq 0 is there, the 60 s are work: new meetings wait.
        assert _send(base, meeting_id, 0, _ogg(1000))["state"] == "queued"
        r = requests.post(base + "/meetings", json={}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "ERR_BACKLOG_FULL"
    finally:
        server.stop()
