"""Two Discord users' packet streams, with a silence gap and a late joiner, through the
adapter into a meeting: order, times (within 0.5 s) and speaker labels."""

from __future__ import annotations

import numpy as np
import requests

from client.discord_adapter import DiscordMeetingStreamer
from codec.opus_packets import FRAME_SAMPLES, SAMPLE_RATE, OpusPacketEncoder
from codec.segmenter import iter_pcm
from tests.conftest import REFERENCE, create_meeting, words
from tests.server_process import JFK
from tests.test_end_to_end import wait_state


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def packets(pcm: np.ndarray) -> list[bytes]:
    encoder = OpusPacketEncoder()
    usable = len(pcm) - len(pcm) % FRAME_SAMPLES
    return [encoder.encode(pcm[i : i + FRAME_SAMPLES]) for i in range(0, usable, FRAME_SAMPLES)]


def first_sound(pcm: np.ndarray) -> float:
    """Seconds to the first sample above 5 % of full scale (int16): the recording's room
    noise stays under it, speech goes well over."""
    return float(np.flatnonzero(np.abs(pcm) > 1638)[0] / SAMPLE_RATE)


def test_two_users_gap_and_late_joiner(transcribing_server):
    base = transcribing_server.url
    pcm = np.concatenate(list(iter_pcm(JFK)))
    split = int(7.6 * SAMPLE_RATE)  # the pause before "ask what you can do"
    alice_first, alice_second = packets(pcm[:split]), packets(pcm[split:])
    bob = packets(pcm)
    meeting_id = create_meeting(base)["id"]  # no declared tracks: any Discord user may join
    clock = FakeClock()
    streamer = DiscordMeetingStreamer(
        base, meeting_id, segment_seconds=5.0, clock=clock, flush_every_s=0.5
    )
    # A timeline of (meeting time, user, packet, rtp). Alice: 0-7.6 s, silent 4 s, then the
    # rest (RTP jumps over the silence). Bob joins at 20 s. RTP bases are random per user.
    events = []
    rtp_a = 3_000_000_000  # wraps around 2^32 during the meeting
    for i, p in enumerate(alice_first):
        events.append((i * 0.02, "111", p, (rtp_a + i * FRAME_SAMPLES) % (1 << 32)))
    resume = len(alice_first) * 0.02 + 4.0
    for i, p in enumerate(alice_second):
        rtp = rtp_a + int(resume * SAMPLE_RATE) + i * FRAME_SAMPLES
        events.append((resume + i * 0.02, "111", p, rtp % (1 << 32)))
    for i, p in enumerate(bob):
        events.append((20.0 + i * 0.02, "222", p, 12345 + i * FRAME_SAMPLES))
    events.sort(key=lambda e: e[0])
    start = clock.now
    for at, user, packet, rtp in events:
        clock.now = start + at
        streamer.feed(user, packet, rtp)
    view = streamer.close()
    assert view["last_seq"] == {"111": 2, "222": 2}
    view = wait_state(base, meeting_id, "complete")
    assert {c["state"] for c in view["chunks"]} == {"transcribed"}

    segs = requests.get(f"{base}/meetings/{meeting_id}/transcript", timeout=10).json()["segments"]
    alice = [s for s in segs if s["track"] == "111"]
    bobs = [s for s in segs if s["track"] == "222"]
    assert words(" ".join(s["text"] for s in alice)) == REFERENCE
    assert words(" ".join(s["text"] for s in bobs)) == REFERENCE
    # Alice spoke first, Bob later: one time-ordered transcript.
    assert [s["track"] for s in segs] == ["111"] * len(alice) + ["222"] * len(bobs)
    # Each line starts at its first sound: jfk's first word, and "ask what" after the pause
    # in which the split falls, moved 4 s later by the silence gap (which kept its length).
    assert abs(alice[0]["start"] - first_sound(pcm)) < 0.5
    second = next(s for s in alice if s["text"].lower().startswith("ask what"))
    assert abs(second["start"] - (7.6 + 4.0 + first_sound(pcm[split:]))) < 0.5
    assert abs(bobs[0]["start"] - (20.0 + first_sound(pcm))) < 0.5
