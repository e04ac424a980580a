"""Where a Discord speaker's packets land in meeting time and in segments (pure rules)."""

from __future__ import annotations

import pytest

from client.discord_bot.packet_timing import (
    REANCHOR_MS,
    RTP_WRAP,
    Action,
    Placement,
    place_in_segment,
    place_packet,
    rtp_delta,
    segment_idle,
)

pytestmark = pytest.mark.storage_free


def test_rtp_delta_across_the_wraparound():
    assert rtp_delta(100, RTP_WRAP - 860) == 960
    assert rtp_delta(RTP_WRAP - 860, 100) == -960
    assert rtp_delta(5, 5) == 0


def test_first_packet_lands_at_its_arrival_and_later_ones_by_rtp():
    clock, ms = place_packet(None, ssrc=7, rtp=RTP_WRAP - 960, arrival_ms=20_000.0)
    assert ms == 20_000.0
    # Network jitter moves arrival, not placement: 3 s of samples later, arriving 150 ms late.
    clock, ms = place_packet(clock, 7, (RTP_WRAP - 960 + 3 * 48_000) % RTP_WRAP, 23_150.0)
    assert ms == 23_000.0
    assert clock.rtp == RTP_WRAP - 960  # the anchor stays


def test_a_new_stream_or_a_clock_that_disagrees_is_placed_by_arrival():
    clock, _ = place_packet(None, 7, 1000, 5_000.0)
    clock, ms = place_packet(clock, 8, 1000 + 48_000, 9_000.0)  # reconnected: new SSRC
    assert (clock.ssrc, ms) == (8, 9_000.0)
    # RTP says 1 s later but 10 s passed (a client that stops its clock in silence).
    clock, ms = place_packet(clock, 8, 1000 + 2 * 48_000, 19_000.0)
    assert ms == 19_000.0
    # Within REANCHOR_MS of arrival: RTP wins.
    _, ms = place_packet(clock, 8, 1000 + 3 * 48_000, 20_000.0 + REANCHOR_MS - 1)
    assert ms == 20_000.0


def test_a_re_anchored_stream_never_starts_inside_audio_already_kept():
    clock, _ = place_packet(None, 7, 0, 5_000.0)
    _, ms = place_packet(clock, 9, 0, arrival_ms=5_500.0, floor_ms=6_000.0)
    assert ms == 6_000.0


def test_pauses_stay_in_the_segment_as_silence_long_silences_close_it():
    assert place_in_segment(None, 0.0, 30, 10).action is Action.NEW_SEGMENT
    pause = place_in_segment((0.0, 4_000.0), 6_500.0, 30, 10)
    assert (pause.action, pause.silence_frames, pause.repeat_frames) == (Action.APPEND, 125, 0)
    assert place_in_segment((0.0, 4_000.0), 4_000.0, 30, 10) == Placement(Action.APPEND)
    # Two packets lost in speech: concealed by repeating the packet before them.
    assert place_in_segment((0.0, 4_000.0), 4_040.0, 30, 10) == Placement(
        Action.APPEND, repeat_frames=2
    )
    assert place_in_segment((0.0, 4_000.0), 4_120.0, 30, 10).silence_frames == 6
    assert place_in_segment((0.0, 4_000.0), 14_001.0, 30, 10).action is Action.NEW_SEGMENT
    assert place_in_segment((0.0, 30_000.0), 30_000.0, 30, 10).action is Action.NEW_SEGMENT
    # A packet whose time is already in the segment (a duplicate): dropped.
    assert place_in_segment((0.0, 4_000.0), 3_900.0, 30, 10).action is Action.DROP
    assert place_in_segment((0.0, 4_000.0), 3_995.0, 30, 10).action is Action.APPEND


def test_an_idle_speaker_s_segment_closes_after_a_pause():
    assert not segment_idle(None, 50_000.0, 10)
    assert not segment_idle(40_000.0, 50_000.0, 10)
    assert segment_idle(40_000.0, 50_001.0, 10)
