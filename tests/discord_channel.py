"""A simulated Discord voice channel recorded by the bot's receive path: discord.py's own
client, guild, members and voice channel (never connected), the bot's `ChannelRecording`
and `RecordingSink` on a real `VoiceRecvClient`, and a clock the test moves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import discord
from discord.ext.voice_recv import VoiceData

from client.discord_bot.channel_recording import ChannelRecording
from client.discord_bot.recording_sink import RecordingSink
from tests.discord_members import attach_voice_client, guild_and_members, voice_channel
from tests.discord_voice import DISPLAY_NAMES, USER_IDS, VoicePacket


class FakeClock:
    """Wall-clock time of a simulated recording. Each starts at its own second: the bot's
    external_id (guild, channel, start) must not name another test's meeting on the
    shared server."""

    def __init__(self) -> None:
        self.start = float(time.time_ns() // 1000)  # far in the future, and unique
        self.now = self.start

    def __call__(self) -> float:
        return self.now


class Channel:
    def __init__(self) -> None:
        async def build() -> None:
            self.client = discord.Client(intents=discord.Intents.default())
            self.guild, by_id = guild_and_members(
                self.client, {USER_IDS[s]: name for s, name in DISPLAY_NAMES.items()}
            )
            self.members = {s: by_id[USER_IDS[s]] for s in DISPLAY_NAMES}
            self.voice_channel = voice_channel(self.client, self.guild)

        asyncio.run(build())
        self.clock = FakeClock()

    def record(
        self,
        spool: Path,
        server: str,
        title: str,
        max_bytes: int = 1 << 30,
        pause_s: float = 10.0,
    ) -> tuple[ChannelRecording, RecordingSink]:
        recording = ChannelRecording.start(
            spool,
            server,
            {"guild_id": str(self.guild.id), "channel_id": str(self.voice_channel.id)},
            title,
            segment_seconds=30.0,
            pause_seconds=pause_s,
            max_bytes=max_bytes,
            started_at=self.clock.start,
            wall_clock=self.clock,
        )
        sink = RecordingSink(recording)
        attach_voice_client(self.client, self.voice_channel, sink)
        return recording, sink

    def play(self, sink: RecordingSink, packets: Iterable[VoicePacket], pace_s: float = 0) -> None:
        """Every packet to the sink at its time on the clock (`pace_s`: a real pause after
        each, so the muxer keeps up), then one second more."""
        for voice in packets:
            self.clock.now = self.clock.start + voice.at_s
            member = self.members[voice.speaker]
            sink.write(member, VoiceData(voice.packet, member))
            if pace_s:
                time.sleep(pace_s)
        self.clock.now += 1.0
