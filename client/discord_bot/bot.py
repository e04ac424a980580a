"""`rollscribe discord`: a bot that records voice channels into meetings.

Slash commands (`/record start [title]`, `/record stop`, `/record status`) drive one
`ChannelRecording` per voice channel. The bot joins with discord-ext-voice-recv's client and
listens with `RecordingSink`; it leaves and finalizes on `/record stop`, or when the channel
has had nobody but bots in it for `leave_after` minutes, and posts the transcript where the
recording was started. After a restart it picks up every recording left in its spool:
uploads what was spooled, then continues (someone is still in the channel) or finalizes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import voice_recv

from client.discord_bot.channel_recording import ChannelRecording
from client.discord_bot.recording_sink import RecordingSink
from client.spool import Spool

log = logging.getLogger("rollscribe.discord")

MESSAGE_LIMIT = 2000  # Discord's limit on a message's content
TRANSCRIPT_WAIT_S = 15 * 60.0


@dataclass
class BotConfig:
    server: str
    spool: Path
    api_key: str | None = None
    segment_seconds: float = 30.0
    pause_seconds: float = 10.0
    spool_max_bytes: int = 1024 * 1024 * 1024
    leave_after_minutes: float = 5.0
    roles: list[str] = field(default_factory=lambda: ["rollscribe"])  # names or ids
    sync_commands: bool = True
    language: str | None = None  # the meetings' language; None: the server's default
    # The voice connection class (tests pass one that does not dial Discord's voice servers).
    voice_client: type[discord.VoiceProtocol] = voice_recv.VoiceRecvClient


@dataclass
class ActiveRecording:
    recording: ChannelRecording
    guild_id: int
    channel_id: int
    text_channel_id: int
    started_by: str
    voice: Any = None  # the VoiceRecvClient while connected
    sink: RecordingSink | None = None
    leave_task: asyncio.Task[None] | None = None
    ending: asyncio.Task[None] | None = None
    outcome: str = ""  # the meeting's state when the bot stopped waiting for it


def may_record(member: discord.Member | discord.User, roles: list[str]) -> bool:
    """Members with one of the configured roles (by name or id); "@everyone" lets anyone."""
    if "@everyone" in roles:
        return True
    held = getattr(member, "roles", [])
    return any(role.name in roles or str(role.id) in roles for role in held)


def humans_in(channel: Any) -> list[Any]:
    return [m for m in getattr(channel, "members", []) if not m.bot]


def transcript_reply(title: str, text: str, srt: str) -> tuple[str, list[discord.File]]:
    """The transcript in the message when it fits, otherwise attached as .txt and .srt."""
    body = f"**{title}**\n{text}".strip()
    if len(body) <= MESSAGE_LIMIT and text.strip():
        return body, []
    lines = len(text.strip().splitlines())
    files = [
        discord.File(io.BytesIO(text.encode()), filename="transcript.txt"),
        discord.File(io.BytesIO(srt.encode()), filename="transcript.srt"),
    ]
    return f"**{title}**: {lines} lines, attached.", files


class RecorderBot(discord.Client):
    def __init__(self, config: BotConfig, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.voice_states = True  # who is in which channel: joining, leaving when empty
        super().__init__(intents=intents, **options)
        self.config = config
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(record_commands(self))
        self.recordings: dict[int, ActiveRecording] = {}  # by voice channel id
        self._resumed = False

    async def setup_hook(self) -> None:
        if self.config.sync_commands:
            await self.tree.sync()

    # ---- recordings ---------------------------------------------------------------------

    def recording_in(self, guild_id: int, channel_id: int | None) -> ActiveRecording | None:
        if channel_id is not None and channel_id in self.recordings:
            return self.recordings[channel_id]
        in_guild = [a for a in self.recordings.values() if a.guild_id == guild_id]
        return in_guild[0] if len(in_guild) == 1 and channel_id is None else None

    async def begin(
        self,
        channel: discord.VoiceChannel | discord.StageChannel,
        text_channel_id: int,
        title: str | None,
        started_by: str,
        recording: ChannelRecording | None = None,
    ) -> ActiveRecording:
        if recording is None:
            recording = await asyncio.to_thread(
                ChannelRecording.start,
                self.config.spool,
                self.config.server,
                {
                    "guild_id": str(channel.guild.id),
                    "channel_id": str(channel.id),
                    "text_channel_id": str(text_channel_id),
                    "channel_name": channel.name,
                },
                title or f"{channel.name} {time.strftime('%Y-%m-%d %H:%M')}",
                self.config.segment_seconds,
                self.config.pause_seconds,
                self.config.spool_max_bytes,
                self.config.api_key,
                language=self.config.language,
            )
        active = ActiveRecording(
            recording, channel.guild.id, channel.id, text_channel_id, started_by
        )
        self.recordings[channel.id] = active
        try:
            active.voice = await channel.connect(cls=self.config.voice_client, self_deaf=False)
            active.sink = RecordingSink(recording)
            active.voice.listen(active.sink)
        except Exception:
            log.exception("joining %s failed", channel)
            self.recordings.pop(channel.id, None)
            await asyncio.to_thread(recording.finish)
            raise
        self.watch_channel(channel)
        return active

    async def end(self, active: ActiveRecording, reason: str) -> str:
        """Leave, finalize, wait for the transcript and post it; the meeting's state then.
        Ends each recording once, however many stops and timers ask."""
        if active.ending is None:
            active.ending = asyncio.create_task(self._end(active, reason))
        await asyncio.shield(active.ending)
        return active.outcome

    async def _end(self, active: ActiveRecording, reason: str) -> None:
        if active.leave_task is not None and active.leave_task is not asyncio.current_task():
            active.leave_task.cancel()
        voice = active.voice
        if voice is not None:
            try:
                if hasattr(voice, "is_listening") and voice.is_listening():
                    voice.stop_listening()
                await voice.disconnect(force=True)
            except Exception:
                log.exception("leaving the voice channel failed")
        recording = active.recording
        title = recording.state.title or "Meeting"
        channel = self.get_channel(active.text_channel_id)
        can_post = channel is not None and hasattr(channel, "send")
        try:
            await asyncio.to_thread(recording.finish)
        except Exception as exc:  # refused for good (an outage is waited out inside)
            log.exception("finalizing %s failed", recording.state.external_id)
            active.outcome = f"not finalized ({exc})"
            self.recordings.pop(active.channel_id, None)
            if can_post:
                await channel.send(  # type: ignore[union-attr]
                    f"**{title}** ({reason}): the server refused to finalize meeting "
                    f"`{recording.meeting_id}`: {exc}. The bot's spool keeps its audio."
                )
            return
        self.recordings.pop(active.channel_id, None)
        # Finalized: the server holds every segment, the spool's folder has done its job.
        await asyncio.to_thread(_forget_spool, recording.spool)
        text, srt, state = await asyncio.to_thread(self._wait_for_transcript, recording)
        active.outcome = state
        if not can_post:
            log.warning("no channel %s to post the transcript of %s", active.text_channel_id, title)
            return
        assert channel is not None and hasattr(channel, "send")
        if state != "complete":
            await channel.send(
                f"**{title}** ({reason}): the transcript is not ready ({state}); meeting "
                f"`{recording.meeting_id}` keeps it."
            )
            return
        content, files = transcript_reply(f"{title} ({reason})", text, srt)
        await channel.send(content, files=files)

    def _wait_for_transcript(self, recording: ChannelRecording) -> tuple[str, str, str]:
        path = f"/meetings/{recording.meeting_id}"
        deadline = time.monotonic() + TRANSCRIPT_WAIT_S
        state = "finalizing"
        while time.monotonic() < deadline:
            state = str(recording.uploader.get_json(path)["state"])
            if state in ("complete", "failed"):
                break
            time.sleep(1.0)
        if state != "complete":
            return "", "", state
        text = recording.uploader.get_text(f"{path}/transcript", {"format": "txt"})
        srt = recording.uploader.get_text(f"{path}/transcript", {"format": "srt"})
        return text, srt, state

    # ---- the channel emptying ------------------------------------------------------------

    def watch_channel(self, channel: Any) -> None:
        active = self.recordings.get(channel.id)
        if active is None or active.ending is not None:
            return
        if humans_in(channel):
            if active.leave_task is not None:
                active.leave_task.cancel()
                active.leave_task = None
        elif active.leave_task is None:
            active.leave_task = asyncio.create_task(self._leave_when_still_empty(active))

    async def _leave_when_still_empty(self, active: ActiveRecording) -> None:
        await asyncio.sleep(self.config.leave_after_minutes * 60)
        await self.end(active, f"the channel was empty for {self.config.leave_after_minutes:g} min")

    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        for state in (before, after):
            if state.channel is not None and state.channel.id in self.recordings:
                self.watch_channel(state.channel)

    # ---- after a restart -----------------------------------------------------------------

    async def on_ready(self) -> None:
        if not self._resumed:
            self._resumed = True
            await self.resume_spooled()

    async def resume_spooled(self) -> None:
        for folder in sorted(p.parent for p in self.config.spool.glob("*/state.json")):
            state = Spool(folder, self.config.spool_max_bytes).load()
            if state is None or state.finalized or not state.source.get("channel_id"):
                continue
            recording = await asyncio.to_thread(
                ChannelRecording.resume,
                folder,
                self.config.spool,
                self.config.pause_seconds,
                self.config.spool_max_bytes,
                self.config.api_key,
            )
            channel = self.get_channel(int(state.source["channel_id"]))
            text_channel_id = int(state.source.get("text_channel_id") or 0)
            if channel is not None and humans_in(channel):
                log.info("continuing the recording of %s after a restart", channel)
                await self.begin(
                    channel, text_channel_id, state.title, "a restart", recording=recording
                )
            else:
                active = ActiveRecording(
                    recording,
                    int(state.source["guild_id"]),
                    int(state.source["channel_id"]),
                    text_channel_id,
                    "a restart",
                )
                self.recordings[active.channel_id] = active
                await self.end(active, "finalized after a restart; the channel was empty")


def _forget_spool(spool: Spool) -> None:
    """A posted meeting's folder (its state file; the segments are already gone)."""
    for path in spool.folder.iterdir():
        path.unlink(missing_ok=True)
    spool.folder.rmdir()


def status_text(active: ActiveRecording, view: dict[str, Any] | None) -> str:
    recording = active.recording
    stats = recording.stats
    elapsed = time.time() - recording.state.started_at
    speakers = ", ".join(sorted(recording.speaker_labels.values())) or "nobody yet"
    lines = [
        f"Recording **{recording.state.title}** for {int(elapsed // 60)} min {int(elapsed % 60)} s,"
        f" started by {active.started_by}",
        f"Speakers: {speakers}",
        f"Segments: {stats.segments_spooled} closed, {stats.segments_uploaded} uploaded, "
        f"{recording.uploads_pending} waiting",
    ]
    if view is not None:
        chunks = view.get("chunks", [])
        done = sum(1 for c in chunks if c.get("state") == "transcribed")
        lag = (view.get("progress") or {}).get("lag_audio_s")
        lines.append(
            f"Transcribed: {done} of {len(chunks)} chunks"
            + (f", lag {lag:.0f} s" if isinstance(lag, int | float) else "")
        )
    else:
        lines.append("Server: not reachable right now (uploads resume when it answers)")
    dropped = stats.dave.dropped
    if dropped or stats.dropped_full_spool or stats.errors:
        lines.append(
            f"Dropped: {dropped} frames that did not decrypt, {stats.dropped_full_spool} "
            f"packets while the spool was full; {stats.errors} errors (see the log)"
        )
    lines.append(f"Meeting: `{recording.meeting_id or 'not created yet'}`")
    return "\n".join(lines)


def record_commands(bot: RecorderBot) -> app_commands.Group:
    group = app_commands.Group(
        name="record", description="Record this voice channel into a transcript", guild_only=True
    )

    def allowed(interaction: discord.Interaction) -> bool:
        return may_record(interaction.user, bot.config.roles)

    async def refuse(interaction: discord.Interaction) -> None:
        roles = ", ".join(bot.config.roles)
        await interaction.response.send_message(
            f"Only members with the role {roles} may start or stop recordings.", ephemeral=True
        )

    async def recording_asked_about(interaction: discord.Interaction) -> ActiveRecording | None:
        """The recording of the caller's voice channel (or the guild's only one when the
        caller is in none); None after saying there is none."""
        voice = getattr(interaction.user, "voice", None)
        channel_id = voice.channel.id if voice is not None and voice.channel else None
        active = bot.recording_in(interaction.guild_id or 0, channel_id)
        if active is None:
            await interaction.response.send_message(
                "Nothing is being recorded here.", ephemeral=True
            )
        return active

    @group.command(name="start", description="Join your voice channel and record it")
    @app_commands.describe(title="The meeting's title")
    async def start(interaction: discord.Interaction, title: str | None = None) -> None:
        if not allowed(interaction):
            return await refuse(interaction)
        voice = getattr(interaction.user, "voice", None)
        channel = voice.channel if voice is not None else None
        if channel is None:
            return await interaction.response.send_message(
                "Join a voice channel first, then /record start.", ephemeral=True
            )
        running = bot.recordings.get(channel.id)
        if running is not None:
            return await interaction.response.send_message(
                f"Already recording {channel.mention}: **{running.recording.state.title}**, "
                f"meeting `{running.recording.meeting_id or 'being created'}`."
            )
        await interaction.response.defer(thinking=True)
        try:
            active = await bot.begin(
                channel, interaction.channel_id or 0, title, interaction.user.display_name
            )
        except Exception as exc:
            await interaction.followup.send(f"Could not join {channel.mention}: {exc}")
            return
        # The upload thread creates the meeting; a moment is usually enough to name it.
        for _ in range(30):
            if active.recording.meeting_id is not None:
                break
            await asyncio.sleep(0.1)
        meeting = active.recording.meeting_id or "created when the server answers"
        await interaction.followup.send(
            f"Recording {channel.mention}: **{active.recording.state.title}**, meeting "
            f"`{meeting}`. /record stop ends it and posts the transcript here."
        )

    @group.command(name="stop", description="Stop recording and post the transcript")
    async def stop(interaction: discord.Interaction) -> None:
        if not allowed(interaction):
            return await refuse(interaction)
        active = await recording_asked_about(interaction)
        if active is None:
            return
        await interaction.response.defer(thinking=True)
        state = await bot.end(active, f"stopped by {interaction.user.display_name}")
        await interaction.followup.send(
            f"Stopped. Meeting `{active.recording.meeting_id}` is {state}."
        )

    @group.command(name="status", description="What is being recorded and how far along it is")
    async def status(interaction: discord.Interaction) -> None:
        active = await recording_asked_about(interaction)
        if active is None:
            return
        view = await asyncio.to_thread(_view_or_none, active.recording)
        await interaction.response.send_message(status_text(active, view), ephemeral=True)

    return group


def _view_or_none(recording: ChannelRecording) -> dict[str, Any] | None:
    """The meeting's view without waiting out an outage (status answers at once)."""
    if recording.meeting_id is None:
        return None
    try:
        r = recording.uploader.session.get(
            f"{recording.uploader.server}/meetings/{recording.meeting_id}", timeout=2
        )
        return dict(r.json()) if r.ok else None
    except Exception:
        return None
