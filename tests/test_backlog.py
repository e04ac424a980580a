"""Bounded, fair, observable backlog: metrics move as chunks queue and transcribe, a short
meeting is not starved by a long one, and admission control refuses new meetings only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import create_meeting
from tests.databases import storage_args
from tests.server_process import ROOT, ServerProcess
from tests.test_end_to_end import upload_segment, wait_state


def metric(text: str, name: str, labels: str = "") -> float | None:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def start_worker(data_dir) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transcribe.worker",
            "--data-dir",
            str(data_dir),
            "--threads",
            "2",
            *storage_args(data_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def idle_server(tmp_path):
    """A server node with no workers of its own: the test starts a worker when it wants."""
    server = ServerProcess(tmp_path / "data", workers=0).start()
    yield server
    server.stop()


def test_metrics_and_meeting_view_follow_the_backlog(idle_server, jfk_segments):
    base = idle_server.url
    segs = jfk_segments[3.0]
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    for s in segs:
        upload_segment(base, meeting_id, "mic", s, s.start_ms)
    time.sleep(0.5)
    text = requests.get(base + "/metrics", timeout=10).text
    audio = sum(s.duration_ms for s in segs) / 1000
    assert metric(text, "rollscribe_queue_jobs") == 4
    assert abs(metric(text, "rollscribe_queue_audio_seconds") - audio) < 0.1
    assert metric(text, "rollscribe_queue_oldest_job_age_seconds") > 0.3
    lag_label = f'{{meeting="{meeting_id}"}}'
    assert abs(metric(text, "rollscribe_meeting_lag_audio_seconds", lag_label) - audio) < 0.1
    assert metric(text, "rollscribe_meeting_since_last_chunk_seconds", lag_label) > 0
    assert metric(text, "rollscribe_chunks", '{state="queued"}') == 1
    assert metric(text, "rollscribe_chunks", '{state="waiting"}') == 3
    assert metric(text, "rollscribe_bytes_received_total") == sum(
        s.path.stat().st_size for s in segs
    )
    assert metric(text, "rollscribe_upload_requests_total", '{code="204",method="PATCH"}') >= 4
    assert metric(text, "rollscribe_transcription_rtf_count") == 0
    view = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()
    assert view["progress"]["queue_position"] == 0
    assert abs(view["progress"]["lag_audio_s"] - audio) < 0.1
    assert view["progress"]["eta_s"] > 0

    # The live event stream reports the same figures as they change.
    stream = requests.get(f"{base}/meetings/{meeting_id}/events", stream=True, timeout=10)
    progress = None
    lines = stream.iter_lines(decode_unicode=True)
    for line in lines:
        if line == "event: meeting.progress":
            progress = json.loads(next(lines)[len("data: ") :])
            break
    stream.close()
    assert progress is not None and progress["queue_position"] == 0
    assert abs(progress["lag_audio_s"] - audio) < 0.1

    worker = start_worker(idle_server.data_dir)
    try:
        requests.post(
            f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {"mic": 3}}, timeout=10
        )
        wait_state(base, meeting_id, "complete", timeout_s=120)
    finally:
        worker.terminate()
        worker.wait(20)
    text = requests.get(base + "/metrics", timeout=10).text
    assert metric(text, "rollscribe_queue_jobs") == 0
    assert metric(text, "rollscribe_queue_audio_seconds") == 0
    assert metric(text, "rollscribe_chunks", '{state="transcribed"}') == 4
    assert metric(text, "rollscribe_transcription_rtf_count") == 4
    assert 0 < metric(text, "rollscribe_transcription_rtf_sum") / 4 < 2
    assert metric(text, "rollscribe_chunk_lag_seconds_count") == 4
    assert metric(text, "rollscribe_meeting_end_latency_seconds_count") == 1
    # The meeting ended: its per-meeting series are gone.
    assert meeting_id not in text
    view = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()
    assert view["progress"]["lag_audio_s"] == 0 and view["progress"]["queue_position"] is None


def test_short_meeting_is_not_starved_by_a_long_one(idle_server, jfk_segments):
    base = idle_server.url
    segs = jfk_segments[3.0]
    tracks = [f"t{i}" for i in range(5)]
    long_id = create_meeting(base, tracks=tracks)["id"]
    for track in tracks:  # 20 chunks, 55 s of audio
        for s in segs:
            upload_segment(base, long_id, track, s, s.start_ms)
    short_id = create_meeting(base, tracks=["mic"])["id"]  # started later
    for s in segs:
        upload_segment(base, short_id, "mic", s, s.start_ms)
    short_view = requests.get(f"{base}/meetings/{short_id}", timeout=10).json()
    assert short_view["progress"]["queue_position"] == 1  # one long-meeting job, then ours
    worker = start_worker(idle_server.data_dir)
    try:
        requests.post(
            f"{base}/meetings/{short_id}/finalize", json={"last_seq": {"mic": 3}}, timeout=10
        )
        wait_state(base, short_id, "complete", timeout_s=120)
        long_view = requests.get(f"{base}/meetings/{long_id}", timeout=10).json()
        left = [c for c in long_view["chunks"] if c["state"] != "transcribed"]
        assert len(left) >= 5, "the long meeting's backlog drained first"
    finally:
        worker.terminate()
        worker.wait(20)


def test_admission_control_refuses_new_meetings_not_uploads(tmp_path, jfk_segments):
    server = ServerProcess(
        tmp_path / "data", workers=0, extra=["--max-backlog-seconds", "15"]
    ).start()
    base = server.url
    segs = jfk_segments[3.0]
    worker = None
    try:
        first = create_meeting(base, tracks=["a", "b"])["id"]
        for s in segs:  # 11 s
            upload_segment(base, first, "a", s, s.start_ms)
        for s in segs[:2]:  # 6 s more: 17 s waiting, limit 15 s
            upload_segment(base, first, "b", s, s.start_ms)
        r = requests.post(base + "/meetings", json={}, timeout=10)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "ERR_BACKLOG_FULL"
        assert int(r.headers["Retry-After"]) >= 5
        ready = requests.get(base + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["backlog"].startswith("over")
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        # The meeting already recording keeps uploading: nothing it sends is refused.
        for s in segs[2:]:
            upload_segment(base, first, "b", s, s.start_ms)
        view = requests.get(f"{base}/meetings/{first}", timeout=10).json()
        assert len(view["chunks"]) == 8
        assert all(c["state"] in ("queued", "waiting") for c in view["chunks"])
        worker = start_worker(server.data_dir)
        requests.post(
            f"{base}/meetings/{first}/finalize", json={"last_seq": {"a": 3, "b": 3}}, timeout=10
        )
        view = wait_state(base, first, "complete", timeout_s=180)
        assert {c["state"] for c in view["chunks"]} == {"transcribed"}
        assert requests.post(base + "/meetings", json={}, timeout=10).status_code == 201
        assert requests.get(base + "/readyz", timeout=10).status_code == 200
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(20)
        server.stop()


def test_readyz_says_when_the_blob_folder_is_gone(tmp_path):
    shared = tmp_path / "shared"
    server = ServerProcess(tmp_path / "data", workers=0, extra=["--blob-url", str(shared)]).start()
    try:
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["blob_store"] == "ok"
        shutil.rmtree(shared)  # the shared mount went away
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["blob_store"].startswith("unusable: FileNotFoundError")
    finally:
        server.stop()
