"""A Discord voice channel's receive side, made on this machine: three speakers' real libopus
packets (festival voices and the jfk recording) as discord-ext-voice-recv hands them to a
sink, with Discord's habits: packets only while someone speaks, RTP timestamps that keep
counting through silence from a random base (one wraps around 2^32), stereo 64 kb/s Opus,
lost packets (the receive extension's `FakePacket`s), a speaker who reconnects (new SSRC),
and a late joiner."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from discord.ext.voice_recv import rtp

from bench.spoken_meeting import SR, SpokenMeeting, build_meeting
from codec.decode import decode_to_16k_mono
from codec.opus_packets import FRAME_SAMPLES, SAMPLE_RATE, OpusPacketEncoder
from codec.segmenter import iter_pcm
from tests.server_process import JFK
from tests.test_meeting_transcript import JFK_TEXT

# (speaker, line, pause after the previous line in s)
SCRIPT = [
    ("ann", "Good morning everyone. Let us begin with the budget.", 0.0),
    ("ben", "The budget is ready. I sent it to you last night.", 0.8),
    ("ann", "Thank you. I read it this morning and it looks good.", 3.0),
    ("ben", "Sorry, one question.", 1.5),
    ("jfk", JFK_TEXT, 2.0),  # joins the channel just before this line
    ("ann", "That is a famous speech.", 0.6),
    ("ben", "Can we move the call to Friday?", 25.0),  # a long silence for everyone
]
VOICES = {"ann": "slt", "ben": "kal", "jfk": "slt"}
DISPLAY_NAMES = {"ann": "Ann Lee", "ben": "Ben", "jfk": "John F. Kennedy"}
USER_IDS = {"ann": 301234567890123456, "ben": 301234567890123457, "jfk": 301234567890123458}


@dataclass(frozen=True)
class VoicePacket:
    at_s: float  # when it reaches the sink, meeting time
    speaker: str
    packet: rtp.RTPPacket | rtp.FakePacket


def spoken_meeting(cache: Path) -> SpokenMeeting:
    return build_meeting(SCRIPT, VOICES, cache, extra={JFK_TEXT: decode_to_16k_mono(JFK)})


def rtp_bytes(sequence: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
    """An RTP packet as Discord sends it (version 2, Opus payload type 120)."""
    return struct.pack(">BBHII", 0x80, 0x78, sequence & 0xFFFF, timestamp, ssrc) + payload


def received_packet(sequence: int, timestamp: int, ssrc: int, opus: bytes) -> rtp.RTPPacket:
    """What the receive extension's reader makes of a packet after transport decryption."""
    packet = rtp.RTPPacket(rtp_bytes(sequence, timestamp, ssrc, opus))
    packet.decrypted_data = opus
    return packet


def _pcm_48k(audio: np.ndarray, tmp: Path, name: str) -> np.ndarray:
    wav = tmp / f"{name}.wav"
    soundfile.write(wav, audio, SR)
    return np.concatenate(list(iter_pcm(wav, SAMPLE_RATE)))


def voice_packets(
    meeting: SpokenMeeting, tmp: Path, seed: int = 7, loss: float = 0.01
) -> list[VoicePacket]:
    """Every speaker's packets in arrival order: each line's frames from 100 ms before its
    first sound to 200 ms after its last, as Discord's voice activity detection sends them."""
    rng = random.Random(seed)
    out: list[VoicePacket] = []
    bases = {"ann": (1 << 32) - 5 * SAMPLE_RATE, "ben": 12_345, "jfk": 987_654_321}
    for speaker in VOICES:
        pcm = _pcm_48k(meeting.tracks[speaker], tmp, speaker)
        encoder = OpusPacketEncoder(channels=2, bitrate=64000)
        ssrc = 1000 + list(VOICES).index(speaker)
        sequence = rng.randrange(1 << 16)
        lines = [x for x in meeting.lines if x.track == speaker]
        arrived = 0.0
        for n, line in enumerate(lines):
            if speaker == "ben" and n == 2:
                ssrc += 500  # ben's client reconnected: a new SSRC, a new RTP base
                bases["ben"] = rng.randrange(1 << 32)
            first = max(0, int((line.start_s - 0.1) * SAMPLE_RATE) // FRAME_SAMPLES)
            last = min(len(pcm), int((line.end_s + 0.2) * SAMPLE_RATE)) // FRAME_SAMPLES
            for frame in range(first, last):
                at = frame * FRAME_SAMPLES
                mono = pcm[at : at + FRAME_SAMPLES]
                timestamp = (bases[speaker] + at) % (1 << 32)
                sequence += 1
                # Network jitter, evened out by the receive extension's jitter buffer,
                # which hands each speaker's packets over in order.
                arrived = max(arrived, at / SAMPLE_RATE + 0.04 + rng.random() * 0.06)
                if rng.random() < loss:
                    packet: rtp.RTPPacket | rtp.FakePacket = rtp.FakePacket(
                        ssrc, sequence & 0xFFFF, timestamp
                    )
                else:
                    opus = encoder.encode(np.repeat(mono, 2))
                    packet = received_packet(sequence, timestamp, ssrc, opus)
                out.append(VoicePacket(arrived, speaker, packet))
    # A stable sort: one speaker's packets keep their order.
    out.sort(key=lambda p: p.at_s)
    return out


def recording_packets(path: Path, ssrc: int, rtp_base: int = 0) -> list[rtp.RTPPacket]:
    """One speaker saying what `path` holds, as received packets (every frame sent)."""
    pcm = np.concatenate(list(iter_pcm(path, SAMPLE_RATE)))
    encoder = OpusPacketEncoder(channels=2, bitrate=64000)
    usable = len(pcm) - len(pcm) % FRAME_SAMPLES
    return [
        received_packet(
            n, (rtp_base + at) % (1 << 32), ssrc, encoder.encode(np.repeat(pcm[at : at + 960], 2))
        )
        for n, at in enumerate(range(0, usable, FRAME_SAMPLES))
    ]
