"""discord.py's own Guild and Member objects, built from gateway payloads as the library
builds them when Discord sends them (no connection: the client is never logged in)."""

from __future__ import annotations

from typing import Any

import discord

EVERYONE = {
    "id": "900000000000000001",
    "name": "@everyone",
    "permissions": "0",
    "position": 0,
    "color": 0,
    "hoist": False,
    "managed": False,
    "mentionable": False,
}


def user_payload(user_id: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


def member_payload(
    user_id: int, name: str, nick: str | None, roles: list[str], bot: bool = False
) -> dict[str, Any]:
    return {
        "user": user_payload(user_id, name, bot),
        "nick": nick,
        "roles": roles,
        "joined_at": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


def guild_and_members(
    client: discord.Client, display_names: dict[int, str], guild_id: int = 800000000000000001
) -> tuple[discord.Guild, dict[int, discord.Member]]:
    state = client._connection
    guild = discord.Guild(
        data={"id": str(guild_id), "name": "Team", "channels": [], "roles": [EVERYONE]},
        state=state,
    )
    members = {
        user_id: discord.Member(
            data=member_payload(user_id, name.split()[0].lower(), name, []),
            guild=guild,
            state=state,
        )
        for user_id, name in display_names.items()
    }
    return guild, members


def voice_channel(
    client: discord.Client, guild: discord.Guild, channel_id: int = 700000000000000001
) -> discord.VoiceChannel:
    data: Any = {
        "id": str(channel_id),
        "name": "General",
        "type": 2,
        "position": 0,
        "bitrate": 64000,
        "user_limit": 0,
        "parent_id": None,
        "permission_overwrites": [],
    }
    return discord.VoiceChannel(state=client._connection, guild=guild, data=data)


def attach_voice_client(client: discord.Client, channel: Any, sink: Any) -> Any:
    """A real VoiceRecvClient for `channel`, with the sink attached by the extension's own
    AudioReader, as `listen()` does; the reader is not started (it would open the UDP
    socket) and the transport keys are placeholders (packets arrive already decrypted)."""
    from discord.ext import voice_recv

    voice = voice_recv.VoiceRecvClient(client, channel)
    voice._connection.mode = "aead_xchacha20_poly1305_rtpsize"
    voice._connection.secret_key = [0] * 32
    voice_recv.reader.AudioReader(sink, voice)
    return voice
