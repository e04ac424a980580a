"""The bot's slash commands, dispatched by discord.py's own CommandTree from interactions it
parsed, against a real transcribing server; Discord's HTTP API and voice connection are the
only stand-ins (tests/discord_standins.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import requests
from discord.ext.voice_recv import VoiceData

from client.discord_bot.bot import MESSAGE_LIMIT, BotConfig, RecorderBot, transcript_reply
from client.discord_bot.channel_recording import ChannelRecording
from client.discord_bot.recording_sink import RecordingSink
from tests.discord_members import attach_voice_client, member_payload
from tests.discord_standins import (
    GUILD_ID,
    RECORDER_ROLE,
    TEXT_ID,
    VOICE_ID,
    DiscordApi,
    StandInVoiceClient,
    add_guild,
    command_interaction,
    connect_offline,
    voice_state,
)
from tests.discord_voice import recording_packets
from tests.server_process import JFK

# The bot's side: what the server stores it in is tested elsewhere (first pass only).
pytestmark = pytest.mark.storage_free

ANN, BEN = 301234567890123456, 301234567890123457
ROLE = str(RECORDER_ROLE["id"])
PEOPLE = {ANN: ("Ann", [ROLE]), BEN: ("Ben", [])}
JFK_WORDS = "ask not what your country can do for you"

DEFERRED = 5  # InteractionResponseType.deferred_channel_message
MESSAGE = 4  # InteractionResponseType.channel_message


async def offline_bot(
    server: str, spool: Path, in_voice: list[int], **config: object
) -> tuple[RecorderBot, DiscordApi]:
    api = DiscordApi()
    bot = RecorderBot(
        BotConfig(server=server, spool=spool, voice_client=StandInVoiceClient, **config)  # type: ignore[arg-type]
    )
    await connect_offline(bot, api)
    add_guild(bot, PEOPLE, in_voice=in_voice)
    return bot, api


async def command(bot: RecorderBot, user: int, sub: str, **options: str) -> None:
    name, roles = PEOPLE[user]
    await bot.tree._call(command_interaction(bot, (user, name, roles), sub, **options))


async def until(done: object) -> None:
    """Waits for `done()` (a condition another thread or task makes true)."""
    # Set by other threads: there is no event to await.
    while not done():  # type: ignore[operator]  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def moved(user: int, channel_id: int | None) -> dict:
    name, roles = PEOPLE[user]
    return voice_state(user, channel_id, member_payload(user, name.lower(), name, roles))


def get_view(server: str, meeting_id: str) -> dict:
    return requests.get(f"{server}/meetings/{meeting_id}", timeout=10).json()


def speak(bot: RecorderBot, user: int, ssrc: int = 4242) -> None:
    """The user says the jfk sentence into the bot's voice connection."""
    sink = StandInVoiceClient.connected[-1].fed_sink
    member = bot.get_guild(GUILD_ID).get_member(user)  # type: ignore[union-attr]
    for packet in recording_packets(JFK, ssrc, rtp_base=4_000_000_000):
        sink.write(member, VoiceData(packet, member))


def test_only_the_role_may_start_or_stop_and_only_from_a_voice_channel(tmp_path):
    async def scenario() -> DiscordApi:
        bot, api = await offline_bot("http://127.0.0.1:9", tmp_path, in_voice=[BEN])
        await command(bot, BEN, "start")  # in the channel, without the role
        await command(bot, BEN, "stop")
        await command(bot, ANN, "start")  # the role, not in a voice channel
        await command(bot, ANN, "stop")
        await command(bot, BEN, "status")
        assert bot.recordings == {}
        return api

    api = asyncio.run(scenario())
    replies = [(s.kind, s.ephemeral, s.content) for s in api.sent]
    refused = "Only members with the role rollscribe may start or stop recordings."
    assert replies == [
        ("response", True, refused),
        ("response", True, refused),
        ("response", True, "Join a voice channel first, then /record start."),
        ("response", True, "Nothing is being recorded here."),
        ("response", True, "Nothing is being recorded here."),
    ]
    assert not list(tmp_path.iterdir())  # nothing spooled, no meeting made


def test_start_status_stop_posts_the_transcript(transcribing_server, tmp_path):
    server = transcribing_server.url

    async def scenario() -> tuple[DiscordApi, str, dict]:
        bot, api = await offline_bot(server, tmp_path, in_voice=[ANN, BEN])
        await command(bot, ANN, "start", title="Standup")
        active = bot.recordings[VOICE_ID]
        await command(bot, ANN, "start")  # a second start: the running meeting, no new one
        assert len(bot.recordings) == 1
        speak(bot, ANN)
        await until(lambda: active.recording.meeting_id is not None)
        meeting_id = active.recording.meeting_id
        await command(bot, BEN, "status")  # anyone may ask
        await command(bot, ANN, "stop")
        assert bot.recordings == {}
        assert not StandInVoiceClient.connected[-1].is_connected()
        return api, meeting_id, await asyncio.to_thread(get_view, server, meeting_id)

    api, meeting_id, view = asyncio.run(scenario())
    assert view["state"] == "complete" and view["title"] == "Standup"
    assert view["external_id"].startswith(f"discord:{GUILD_ID}:{VOICE_ID}:")
    assert view["track_labels"] == {str(ANN): "Ann"}
    sent = api.sent
    # /record start: deferred while joining, then said where the transcript will go.
    assert (sent[0].kind, sent[0].response_type) == ("response", DEFERRED)
    assert sent[1].kind == "followup" and sent[1].content.startswith(
        f"Recording <#{VOICE_ID}>: **Standup**, meeting `{meeting_id}`."
    )
    # The second start answers with the running meeting.
    assert sent[2].kind == "response" and "Already recording" in sent[2].content
    # /record status: ephemeral, who speaks, what was uploaded, which meeting.
    status = sent[3]
    assert status.ephemeral and "Speakers: Ann" in status.content
    assert f"Meeting: `{meeting_id}`" in status.content
    # /record stop: deferred, the transcript posted in the channel, then the outcome.
    assert (sent[4].kind, sent[4].response_type) == ("response", DEFERRED)
    posted = sent[5]
    assert posted.kind == "message" and "Standup (stopped by Ann)" in posted.content
    assert "Ann: And so my fellow Americans" in posted.content.replace(",", "")
    assert JFK_WORDS in posted.content.lower()
    assert sent[6].kind == "followup" and sent[6].content == (
        f"Stopped. Meeting `{meeting_id}` is complete."
    )
    assert not list(tmp_path.iterdir())  # the finalized meeting's spool folder is gone


def test_a_long_transcript_is_attached_as_text_and_srt():
    short, files = transcript_reply("Standup", "[00:00:01.000] Ann: Hello.\n", "1\n...")
    assert files == [] and short == "**Standup**\n[00:00:01.000] Ann: Hello."
    text = "".join(f"[00:00:{i:02d}.000] Ann: line {i}\n" for i in range(60)) * 3
    content, files = transcript_reply("Standup", text, "1\n00:00:01,000 --> ...")
    assert len(content) <= MESSAGE_LIMIT and "180 lines, attached" in content
    assert [f.filename for f in files] == ["transcript.txt", "transcript.srt"]
    assert files[0].fp.read().decode() == text


def test_an_empty_channel_is_finalized_and_left(transcribing_server, tmp_path):
    server = transcribing_server.url

    async def scenario() -> tuple[DiscordApi, float]:
        bot, api = await offline_bot(
            server, tmp_path, in_voice=[ANN, BEN], leave_after_minutes=0.02
        )
        await command(bot, ANN, "start")
        speak(bot, ANN)
        state = bot._connection
        # Ann leaves and comes back within the time: the recording goes on.
        state.parse_voice_state_update(moved(ANN, None))
        state.parse_voice_state_update(moved(BEN, None))
        await asyncio.sleep(0.2)
        state.parse_voice_state_update(moved(ANN, VOICE_ID))
        await asyncio.sleep(1.5)
        assert VOICE_ID in bot.recordings
        # Now everyone leaves for good.
        state.parse_voice_state_update(moved(ANN, None))
        left = time.monotonic()
        await until(lambda: VOICE_ID not in bot.recordings and api.of("message"))
        return api, time.monotonic() - left

    api, after_s = asyncio.run(scenario())
    assert after_s >= 1.2  # not before --leave-after
    posted = api.of("message")[0]
    assert "the channel was empty for 0.02 min" in posted.content
    assert JFK_WORDS in posted.content.lower()


def _left_by_a_stopped_bot(server: str, spool: Path) -> ChannelRecording:
    """A recording a bot was making when it stopped: segments uploaded, not finalized."""

    async def record() -> ChannelRecording:
        bot, _api = await offline_bot(server, spool, in_voice=[ANN])
        channel = bot.get_channel(VOICE_ID)
        recording = ChannelRecording.start(
            spool,
            server,
            {
                "guild_id": str(GUILD_ID),
                "channel_id": str(VOICE_ID),
                "text_channel_id": str(TEXT_ID),
            },
            "Before the restart",
            segment_seconds=30.0,
            pause_seconds=10.0,
            max_bytes=1 << 30,
        )
        sink = RecordingSink(recording)
        attach_voice_client(bot, channel, sink)
        member = bot.get_guild(GUILD_ID).get_member(ANN)  # type: ignore[union-attr]
        for packet in recording_packets(JFK, 777):
            sink.write(member, VoiceData(packet, member))
        recording.stop_recording()
        for thread in recording._threads:
            thread.join()
        return recording

    recording = asyncio.run(record())
    assert not recording.state.finalized and recording.uploads_pending == 0
    return recording


@pytest.mark.parametrize("people_still_there", [False, True])
def test_a_restarted_bot_finalizes_or_continues(transcribing_server, tmp_path, people_still_there):
    server = transcribing_server.url
    before = _left_by_a_stopped_bot(server, tmp_path)

    async def restart() -> tuple[DiscordApi, RecorderBot]:
        in_voice = [ANN] if people_still_there else []
        bot, api = await offline_bot(server, tmp_path, in_voice=in_voice)
        await bot.resume_spooled()
        if people_still_there:
            active = bot.recordings[VOICE_ID]
            assert active.recording.meeting_id == before.meeting_id  # the same meeting
            speak(bot, ANN, ssrc=999)  # more of the meeting, after the restart
            await command(bot, ANN, "stop")
        return api, bot

    api, _bot = asyncio.run(restart())
    posted = api.of("message")[0]
    expected = "finalized after a restart" if not people_still_there else "stopped by Ann"
    assert expected in posted.content
    said = posted.content.lower().count("ask what you can do for your country")
    assert said == (2 if people_still_there else 1)  # before the restart, and after it
    view = get_view(server, before.meeting_id)
    assert view["state"] == "complete"
    assert [c["seq"] for c in view["chunks"]] == list(range(len(view["chunks"])))


def test_a_refused_finalize_is_said_in_the_channel_and_the_spool_kept(
    transcribing_server, tmp_path
):
    """Someone else finalized the meeting with other last seqs: the bot's finalize gets 409
    ERR_FINALIZE_CONFLICT; it says so where the recording started and keeps its spool."""
    server = transcribing_server.url

    async def scenario() -> DiscordApi:
        bot, api = await offline_bot(server, tmp_path, in_voice=[ANN])
        await command(bot, ANN, "start")
        active = bot.recordings[VOICE_ID]
        speak(bot, ANN)
        await until(lambda: active.recording.meeting_id is not None)
        url = f"{server}/meetings/{active.recording.meeting_id}/finalize"
        r = await asyncio.to_thread(
            requests.post, url, json={"last_seq": {str(ANN): 3}}, timeout=10
        )
        assert r.status_code == 200, r.text
        await command(bot, ANN, "stop")
        assert bot.recordings == {}
        return api

    api = asyncio.run(scenario())
    posted = api.of("message")[0].content
    assert "the server refused to finalize meeting" in posted and "409" in posted
    assert api.of("followup")[-1].content.startswith("Stopped. Meeting")
    assert list(tmp_path.glob("*/state.json"))  # the spool keeps the recording
