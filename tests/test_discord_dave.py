"""DAVE (Discord's end-to-end encryption) on the receive path, with davey's own sessions.

A davey session joins an MLS group only through the voice server: the server is the
group's external sender and signs the proposals that add members, and davey's Python API
has no way to make those locally (see docs/ARCHITECTURE.md). So what is tested here is
every path that does not need a formed group: plain frames in calls without DAVE, frames
before the session is ready, ciphertext that cannot be decrypted (dropped, counted, never
audio), and the Opus silence frame DAVE leaves plain; the decrypting call is exercised up
to davey's own refusal (no key for that sender)."""

from __future__ import annotations

import asyncio
import os

import davey
import discord
import numpy as np
import pytest
from discord.ext.voice_recv import VoiceData

from client.discord_bot.channel_recording import ChannelRecording
from client.discord_bot.dave_frames import DaveStats, open_frame, session_of
from client.discord_bot.recording_sink import RecordingSink
from codec.opus_packets import SILENCE_FRAME, OpusPacketEncoder, has_dave_trailer
from codec.validate import validate_ogg_opus
from tests.discord_members import attach_voice_client, guild_and_members, voice_channel
from tests.discord_voice import received_packet

pytestmark = pytest.mark.storage_free

BOT_ID, ALICE = 100000000000000001, 301234567890123456


def speech_packets(n: int = 50) -> list[bytes]:
    encoder = OpusPacketEncoder(channels=2, bitrate=64000)
    t = np.arange(960) / 48000
    return [
        encoder.encode(np.repeat((8000 * np.sin(2 * np.pi * (200 + 10 * i) * t)), 2))
        for i in range(n)
    ]


def dave_ciphertext(opus: bytes) -> bytes:
    """What a DAVE frame looks like on the wire: the Opus bytes encrypted (random here), an
    8-byte truncated tag, a nonce, the supplemental size and the 0xFAFA marker."""
    body = os.urandom(len(opus)) + os.urandom(8) + b"\x01"
    frame = body + bytes([len(body) - len(opus) + 3]) + b"\xfa\xfa"
    assert has_dave_trailer(frame)
    return frame


def test_a_call_without_dave_passes_plain_opus_and_drops_ciphertext():
    stats = DaveStats()
    opus = speech_packets(1)[0]
    assert open_frame(None, 0, ALICE, opus, stats) == opus
    assert open_frame(None, 0, ALICE, dave_ciphertext(opus), stats) is None
    assert (stats.passed_through, stats.dropped) == (1, 1)
    assert stats.reasons == {"encrypted, but the call has no DAVE session": 1}


def test_a_session_that_is_not_ready_yet_keeps_plain_frames_and_drops_ciphertext():
    session = davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, BOT_ID, 700000000000000001)
    assert not session.ready
    stats = DaveStats()
    opus = speech_packets(1)[0]
    assert open_frame(session, 1, ALICE, SILENCE_FRAME, stats) == SILENCE_FRAME
    assert open_frame(session, 1, ALICE, opus, stats) == opus
    assert open_frame(session, 1, ALICE, dave_ciphertext(opus), stats) is None
    assert (stats.passed_through, stats.dropped) == (2, 1)
    assert stats.reasons == {"encrypted before the DAVE session was ready": 1}


class ReadySession:
    """davey's session for everything but `ready`, which only the voice server's MLS
    handshake can make true: decrypt() is davey's own, and refuses as it would for a
    sender whose key the group never gave us."""

    def __init__(self) -> None:
        self.inner = davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, BOT_ID, 700000000000000001)
        self.ready = True

    def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes:
        return self.inner.decrypt(user_id, media_type, packet)


def test_a_frame_that_does_not_decrypt_is_dropped_and_counted():
    stats = DaveStats()
    opus = speech_packets(1)[0]
    assert open_frame(ReadySession(), 1, ALICE, dave_ciphertext(opus), stats) is None
    assert stats.dropped == 1
    assert "NoDecryptorForUser" in next(iter(stats.reasons))


def test_the_sink_uses_the_session_discord_py_keeps_and_never_uploads_ciphertext(tmp_path):
    """Through the receive sink on a real VoiceRecvClient whose connection state holds a
    davey session, as discord.py's does in a DAVE call: ciphertext never reaches a segment,
    plain frames do, and the drops are counted for /record status."""

    async def scenario() -> tuple[ChannelRecording, list[str]]:
        client = discord.Client(intents=discord.Intents.default())
        guild, members = guild_and_members(client, {ALICE: "Alice"})
        channel = voice_channel(client, guild)
        recording = ChannelRecording.start(
            tmp_path,
            "http://127.0.0.1:9",  # nothing listens: the meeting is never created here
            {"guild_id": str(guild.id), "channel_id": str(channel.id)},
            "DAVE",
            segment_seconds=30.0,
            pause_seconds=10.0,
            max_bytes=1 << 30,
        )
        sink = RecordingSink(recording)
        voice = attach_voice_client(client, channel, sink)
        voice._connection.dave_protocol_version = 1
        voice._connection.dave_session = davey.DaveSession(1, BOT_ID, channel.id)
        assert session_of(sink.voice_client)[1] == 1
        alice = members[ALICE]
        speech = speech_packets(60)
        for i, opus in enumerate(speech[:50]):
            packet = received_packet(i, 960 * i, 1111, dave_ciphertext(opus))
            sink.write(alice, VoiceData(packet, alice))
        # Plain frames, as in a transition's passthrough window: kept.
        for i, opus in enumerate(speech[50:], start=50):
            sink.write(alice, VoiceData(received_packet(i, 960 * i, 1111, opus), alice))
        # Discord's silence frames: no audio, the receive extension marks them silence.
        for i in range(60, 65):
            packet = received_packet(i, 960 * i, 1111, SILENCE_FRAME)
            sink.write(alice, VoiceData(packet, alice))
        recording.stop_recording()
        recording._threads[0].join()
        return recording, sorted(p.name for p in tmp_path.rglob("*.opus"))

    recording, segments = asyncio.run(scenario())
    assert recording.stats.dave.dropped == 50
    assert recording.stats.dave.passed_through == 10
    assert recording.stats.packets == 10  # only the plain frames became audio
    assert len(segments) == 1
    # The segment is what the server accepts: Opus, no DAVE trailers, the 10 plain frames.
    info = validate_ogg_opus(next(tmp_path.rglob("*.opus")))
    assert info.packets == 10
