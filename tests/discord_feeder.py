"""A bot process for crash tests: the three-speaker channel of `tests/discord_voice.py` fed
through the bot's receive sink at `--speed` times real time, from meeting time `--from-s`.
Meeting time runs on a clock shared by every run (`--origin`: the real time of meeting
time 0), so a run started after a SIGKILL places its audio where it belongs and the
time the bot was dead is a gap. `--finish` stops and finalizes after the last packet;
without it the process waits to be killed.

python -m tests.discord_feeder --server URL --spool DIR --festival-cache DIR --start T [--origin T]
    [--from-s S] [--speed X] [--finish]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import discord
from discord.ext.voice_recv import VoiceData

from client.discord_bot.channel_recording import ChannelRecording
from client.discord_bot.recording_sink import RecordingSink
from tests.discord_members import attach_voice_client, guild_and_members, voice_channel
from tests.discord_voice import DISPLAY_NAMES, USER_IDS, spoken_meeting, voice_packets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--festival-cache", required=True)
    parser.add_argument("--origin", type=float, help="default: a second after it is ready")
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument(
        "--start", type=float, required=True, help="the recording's wall-clock start, every run"
    )
    parser.add_argument("--from-s", type=float, default=0.0)
    parser.add_argument("--finish", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")

    def meeting_clock() -> float:
        return args.start + (time.time() - args.origin) * args.speed

    meeting = spoken_meeting(Path(args.festival_cache))
    packets = voice_packets(meeting, Path(tempfile.mkdtemp()))
    if args.origin is None:
        args.origin = time.time() + 1.0
    print("origin", args.origin, flush=True)

    async def run() -> None:
        client = discord.Client(intents=discord.Intents.default())
        guild, by_id = guild_and_members(
            client, {USER_IDS[s]: name for s, name in DISPLAY_NAMES.items()}
        )
        channel = voice_channel(client, guild)
        recording = ChannelRecording.start(
            Path(args.spool),
            args.server,
            {"guild_id": str(guild.id), "channel_id": str(channel.id)},
            "Crash test",
            segment_seconds=30.0,
            pause_seconds=10.0,
            max_bytes=1 << 30,
            started_at=args.start,
            wall_clock=meeting_clock,
        )
        sink = RecordingSink(recording)
        attach_voice_client(client, channel, sink)
        print("recording", flush=True)
        for voice in packets:
            if voice.at_s < args.from_s:
                continue
            wait = args.origin + voice.at_s / args.speed - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            member = by_id[USER_IDS[voice.speaker]]
            sink.write(member, VoiceData(voice.packet, member))
        if not args.finish:
            await asyncio.sleep(3600)  # until killed
        view = await asyncio.to_thread(recording.finish)
        print("finalized", view["id"], flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
