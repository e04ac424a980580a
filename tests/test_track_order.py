"""Per-track order and the carry through the real server: cuts inside words, out-of-order
arrival, and a worker killed (SIGKILL) mid-job on a chunk that has a carry."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import requests

from codec.segmenter import OggOpusFileWriter, iter_pcm
from tests.blob_stores import carries
from tests.conftest import REFERENCE, create_meeting, words
from tests.server_process import JFK, ServerProcess
from tests.test_end_to_end import upload_segment, wait_state


def _finalize(base: str, meeting_id: str, last_seq: dict[str, int]) -> None:
    r = requests.post(
        f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": last_seq}, timeout=10
    )
    assert r.status_code == 200, r.text


def _segments(base: str, meeting_id: str) -> list[tuple[float, float, str]]:
    transcript = requests.get(f"{base}/meetings/{meeting_id}/transcript", timeout=10).json()
    return [(s["start"], s["end"], s["text"]) for s in transcript["segments"]]


def _spoken(base: str, meeting_id: str) -> list[str]:
    transcript = requests.get(f"{base}/meetings/{meeting_id}/transcript", timeout=10).json()
    return words(" ".join(s["text"] for s in transcript["segments"]))


def test_cut_every_2_3_s_inside_words(transcribing_server, jfk_segments):
    base = transcribing_server.url
    segments = jfk_segments[2.3]
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    for segment in segments:
        upload_segment(base, meeting_id, "mic", segment, segment.start_ms)
    _finalize(base, meeting_id, {"mic": len(segments) - 1})
    wait_state(base, meeting_id, "complete")
    assert _spoken(base, meeting_id) == REFERENCE


def test_out_of_order_arrival_waits_for_the_predecessor(transcribing_server, jfk_segments):
    base = transcribing_server.url
    segments = jfk_segments[3.0]
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    for seq in (2, 3):
        upload_segment(base, meeting_id, "mic", segments[seq], segments[seq].start_ms)
    time.sleep(1.0)  # a worker is idle: nothing may run before seq 0 and 1 exist
    view = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()
    assert {c["seq"]: c["state"] for c in view["chunks"]} == {2: "waiting", 3: "waiting"}
    for seq in (0, 1):
        upload_segment(base, meeting_id, "mic", segments[seq], segments[seq].start_ms)
    _finalize(base, meeting_id, {"mic": 3})
    wait_state(base, meeting_id, "complete")
    assert _spoken(base, meeting_id) == REFERENCE


# jfk's words up to "for you", spoken by 8 s.
BEFORE_8_S = 14


def _long_track(tmp_path, readings: int = 1) -> list:
    """Seq 0: jfk 0-5.5 s (cut inside a word); seq 1: the rest plus more readings
    (about 11 s each, so its job lasts long enough to be caught midway)."""
    pcm = np.concatenate(list(iter_pcm(JFK)))
    cut = int(5.5 * 48000)
    pieces = [pcm[:cut], np.concatenate([pcm[cut:]] + [pcm] * readings)]

    class Seg:
        def __init__(self, path, seq, start_ms):
            self.path, self.seq, self.start_ms = path, seq, start_ms

    out = []
    for seq, piece in enumerate(pieces):
        writer = OggOpusFileWriter(tmp_path / f"long{readings}-{seq}.opus")
        writer.write(piece)
        writer.close()
        out.append(Seg(writer.path, seq, 0 if seq == 0 else 5500))
    return out


@pytest.mark.crash
def test_worker_killed_mid_job_with_a_carry(tmp_path):
    segments = _long_track(tmp_path)
    server = ServerProcess(tmp_path / "data", workers=1, extra=["--lease-seconds", "3"]).start()
    try:
        base = server.url
        # Reference run: nobody is killed.
        # Both runs finalize first, so seq 1's job is always the track's last (a flush) and
        # both runs transcribe exactly the same windows: the results must be identical.
        calm = create_meeting(base, tracks=["mic"])["id"]
        _finalize(base, calm, {"mic": 1})
        for s in segments:
            upload_segment(base, calm, "mic", s, s.start_ms)
        wait_state(base, calm, "complete")

        meeting_id = create_meeting(base, tracks=["mic"])["id"]
        _finalize(base, meeting_id, {"mic": 1})
        upload_segment(base, meeting_id, "mic", segments[0], 0)
        upload_segment(base, meeting_id, "mic", segments[1], 5500)
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline:
            view = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()
            chunk = view["chunks"][1]
            if chunk["state"] == "transcribing" and chunk["worker"]:
                # At once: a job on 16 s of audio lasts seconds on any machine, and the
                # attempts counted below say the kill came before its commit.
                killed = int(chunk["worker"].split(":")[1])
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        assert killed is not None, "never saw seq 1 transcribing"
        view = wait_state(base, meeting_id, "complete", timeout_s=180)
        assert view["chunks"][1]["attempts"] == 2  # the killed attempt, then the one that ran
        # Exactly the transcript of the run nobody killed: the same carry, the same windows,
        # each segment once, no word lost or doubled at the boundary.
        assert _segments(base, meeting_id) == _segments(base, calm)
        spoken = _spoken(base, meeting_id)
        # The cut at 5.5 s falls inside "ask not": every word on either side of it, once.
        # (Past them tiny.en may add a word on some CPUs: "can do for you personally ask".)
        assert spoken[:BEFORE_8_S] == REFERENCE[:BEFORE_8_S]
        assert spoken.count("fellow") == 2
        segments = requests.get(f"{base}/meetings/{meeting_id}/transcript", timeout=10).json()[
            "segments"
        ]
        starts = [s["start"] for s in segments]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        # Every carry was consumed, by the next chunk or the tail, and then deleted.
        assert carries(server.data_dir) == []
    finally:
        server.stop()
