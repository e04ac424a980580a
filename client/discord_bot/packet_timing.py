"""Where a speaker's Opus packet belongs in meeting time, and in which segment: pure
decisions, kept apart from files and threads so they can be tested on their own.

Discord sends a speaker's audio only while they speak. Their RTP timestamps count 48 kHz
samples and keep counting across silences, so within one stream (one SSRC) they place each
packet exactly, independent of network jitter. The first packet of a stream is placed at
the moment it arrived (a late joiner lands where they joined). A stream that restarts (a
new SSRC after a reconnect) or whose timestamps disagree with the arrival clock by more than
REANCHOR_MS (a client that pauses its clock in silence, or resets it) is placed by arrival
again from that packet on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

RTP_WRAP = 1 << 32
SAMPLES_PER_MS = 48
REANCHOR_MS = 2000.0
FRAME_MS = 20
# A hole this short in a stream of speech is lost packets, not a pause (Discord stops
# sending when a speaker stops, and its voice activity detection holds on for 100 ms+).
LOSS_FRAMES = 5


@dataclass(frozen=True)
class SpeakerClock:
    """One RTP stream's anchor: timestamp `rtp` was at meeting time `ms`."""

    ssrc: int
    rtp: int
    ms: float


def rtp_delta(rtp: int, anchor: int) -> int:
    """Samples from `anchor` to `rtp`, across the 32-bit wraparound; negative when `rtp`
    is (by less than half the range) before the anchor."""
    delta = (rtp - anchor) % RTP_WRAP
    return delta - RTP_WRAP if delta >= RTP_WRAP // 2 else delta


def place_packet(
    clock: SpeakerClock | None, ssrc: int, rtp: int, arrival_ms: float, floor_ms: float = 0.0
) -> tuple[SpeakerClock, float]:
    """The packet's meeting time and the clock for the packets after it. A re-anchored
    stream never starts before `floor_ms` (the end of what this speaker already has), so a
    new anchor cannot make audio overlap audio already kept."""
    if clock is not None and clock.ssrc == ssrc:
        ms = clock.ms + rtp_delta(rtp, clock.rtp) / SAMPLES_PER_MS
        if abs(ms - arrival_ms) <= REANCHOR_MS:
            return clock, ms
    ms = max(arrival_ms, floor_ms)
    return SpeakerClock(ssrc, rtp, ms), ms


class Action(Enum):
    APPEND = "append"  # into the open segment, after `silence_frames` of silence
    NEW_SEGMENT = "new segment"  # close the open one (if any); this packet opens the next
    DROP = "drop"  # its time is already covered (a duplicate or very late packet)


@dataclass(frozen=True)
class Placement:
    action: Action
    silence_frames: int = 0  # a pause: Opus silence
    repeat_frames: int = 0  # lost packets: the packet before, again (see place_in_segment)


def place_in_segment(
    segment: tuple[float, float] | None,
    packet_ms: float,
    segment_seconds: float,
    pause_seconds: float,
) -> Placement:
    """`segment`: the open segment's (start_ms, end_ms), or None.

    A pause up to `pause_seconds` stays inside the segment as Opus silence frames (3 bytes
    each), so a speaker's utterances share uploads instead of each becoming one; a longer
    silence closes it, and the silence itself is never uploaded (the next segment starts
    at its own time and the server knows the gap). A segment also closes once it spans
    `segment_seconds`."""
    if segment is None:
        return Placement(Action.NEW_SEGMENT)
    start_ms, end_ms = segment
    gap_ms = packet_ms - end_ms
    if gap_ms < -FRAME_MS / 2:
        return Placement(Action.DROP)
    if gap_ms > pause_seconds * 1000 or end_ms - start_ms >= segment_seconds * 1000:
        return Placement(Action.NEW_SEGMENT)
    frames = max(0, round(gap_ms / FRAME_MS))
    if frames <= LOSS_FRAMES:
        # Packet loss concealment without decoding: the previous packet repeated keeps the
        # voice going where digital silence would cut holes into words (the muxed packets
        # are never decoded here, so libopus's own concealment is not available).
        return Placement(Action.APPEND, repeat_frames=frames)
    return Placement(Action.APPEND, silence_frames=frames)


def segment_idle(last_arrival_ms: float | None, now_ms: float, pause_seconds: float) -> bool:
    """An open segment whose speaker has said nothing for longer than a pause is closed (and
    uploaded) without waiting for their next word."""
    return last_arrival_ms is not None and now_ms - last_arrival_ms > pause_seconds * 1000
