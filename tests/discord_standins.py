"""Discord without Discord: discord.py's own client, state, guild, members, interactions and
command tree, with stand-ins only where bytes would leave the machine.

- `StandInWebhookAdapter`: interaction responses and follow-ups go through discord.py's
  `AsyncWebhookAdapter.request` (an aiohttp call to discord.com); this records them instead.
- `StandInHTTP`: `discord.http.HTTPClient.request` (channel messages); recorded likewise.
- `StandInVoiceClient`: discord-ext-voice-recv's `VoiceRecvClient` whose `connect` does not
  dial the voice gateway and whose `listen` attaches the sink with the extension's own
  `AudioReader` but starts no UDP socket; tests feed packets to `voice.fed_sink`.
Everything else (parsing gateway payloads, interactions, the command tree's dispatch, option
parsing, checks, `Member.voice`, `VoiceChannel.members`, VOICE_STATE_UPDATE handling) is the
libraries' code.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import discord
from discord.ext import voice_recv
from discord.http import HTTPClient
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from tests.discord_members import EVERYONE, member_payload, user_payload

GUILD_ID = 800000000000000001
VOICE_ID = 700000000000000001
TEXT_ID = 700000000000000002
BOT_ID = 100000000000000001
APP_ID = 100000000000000001
RECORDER_ROLE = {**EVERYONE, "id": "900000000000000002", "name": "rollscribe", "position": 1}
_ids = itertools.count(1_000_000_000_000_000_000)


@dataclass
class Sent:
    """One thing the bot sent to Discord."""

    kind: str  # "response" (interaction callback), "followup", "message" (channel.send)
    content: str | None
    ephemeral: bool = False
    response_type: int | None = None
    files: dict[str, bytes] = field(default_factory=dict)


class DiscordApi:
    """What the bot sent, in order."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def of(self, kind: str) -> list[Sent]:
        return [s for s in self.sent if s.kind == kind]


def _message(channel_id: int, content: str | None) -> dict[str, Any]:
    return {
        "id": str(next(_ids)),
        "channel_id": str(channel_id),
        "author": {"id": str(BOT_ID), "username": "rollscribe", "discriminator": "0"},
        "content": content or "",
        "timestamp": "2026-11-24T00:00:00+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
    }


def _files(files: Any) -> dict[str, bytes]:
    out = {}
    for f in files or []:
        f.fp.seek(0)
        out[f.filename] = f.fp.read()
    return out


def _payload(payload: Any, multipart: Any) -> dict[str, Any]:
    if payload is not None:
        return dict(payload)
    for part in multipart or []:
        if part.get("name") == "payload_json":
            return dict(json.loads(part["value"]))
    return {}


class StandInWebhookAdapter(AsyncWebhookAdapter):
    def __init__(self, api: DiscordApi) -> None:
        super().__init__()
        self.api = api

    async def request(self, route: Any, session: Any, **kwargs: Any) -> Any:
        body = _payload(kwargs.get("payload"), kwargs.get("multipart"))
        files = _files(kwargs.get("files"))
        if route.path.endswith("/callback"):
            data = body.get("data") or {}
            self.api.sent.append(
                Sent(
                    "response",
                    data.get("content"),
                    bool((data.get("flags") or 0) & 64),
                    int(body["type"]),
                    files,
                )
            )
            return {
                "interaction": {"id": str(route.webhook_id), "type": 2},
                "resource": {"type": int(body["type"])},
            }
        if route.method == "POST" and route.path == "/webhooks/{webhook_id}/{webhook_token}":
            ephemeral = bool((body.get("flags") or 0) & 64)
            self.api.sent.append(Sent("followup", body.get("content"), ephemeral, None, files))
            return _message(TEXT_ID, body.get("content"))
        raise AssertionError(f"the bot called Discord's {route.method} {route.path}")


class StandInHTTP(HTTPClient):
    api: DiscordApi

    async def request(self, route: Any, **kwargs: Any) -> Any:
        if route.method == "POST" and route.path == "/channels/{channel_id}/messages":
            body = _payload(kwargs.get("json"), kwargs.get("form"))
            self.api.sent.append(
                Sent("message", body.get("content"), files=_files(kwargs.get("files")))
            )
            return _message(int(route.channel_id), body.get("content"))
        raise AssertionError(f"the bot called Discord's {route.method} {route.path}")


class StandInVoiceClient(voice_recv.VoiceRecvClient):
    """Connected without the voice gateway; the sink is fed by the test."""

    connected: list[StandInVoiceClient] = []

    async def connect(self, **kwargs: Any) -> None:  # discord.py passes timeout, reconnect
        self._connection.mode = "aead_xchacha20_poly1305_rtpsize"
        self._connection.secret_key = [0] * 32
        self._standin_connected = True
        self.fed_sink: Any = None
        StandInVoiceClient.connected.append(self)

    def is_connected(self) -> bool:
        return getattr(self, "_standin_connected", False)

    def listen(self, sink: voice_recv.AudioSink, *, after: Any = None) -> None:
        self._reader = voice_recv.reader.AudioReader(sink, self, after=after)  # not started
        self.fed_sink = sink

    def is_listening(self) -> bool:
        return self.fed_sink is not None

    def stop_listening(self) -> None:
        self.fed_sink = None

    async def disconnect(self, *, force: bool = False) -> None:
        self._standin_connected = False
        self.cleanup()


def voice_state(
    user_id: int, channel_id: int | None, member: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A VOICE_STATE_UPDATE's data (the gateway sends the member with it in guilds)."""
    return {
        **({"member": member} if member else {}),
        "guild_id": str(GUILD_ID),
        "channel_id": str(channel_id) if channel_id else None,
        "user_id": str(user_id),
        "session_id": "s",
        "deaf": False,
        "mute": False,
        "self_deaf": False,
        "self_mute": False,
        "self_video": False,
        "suppress": False,
        "request_to_speak_timestamp": None,
    }


async def connect_offline(client: discord.Client, api: DiscordApi) -> None:
    """What logging in would set up, without logging in: the loop, our own user, the HTTP
    and webhook edges."""
    await client._async_setup_hook()
    http = StandInHTTP(client.loop)
    http.api = api
    client.http = http
    client._connection.http = http
    client._connection.user = discord.ClientUser(
        state=client._connection,
        data=user_payload(BOT_ID, "rollscribe", bot=True),  # type: ignore[arg-type]
    )
    client._connection.application_id = APP_ID
    async_context.set(StandInWebhookAdapter(api))


def add_guild(
    client: discord.Client,
    people: dict[int, tuple[str, list[str]]],
    in_voice: list[int],
) -> discord.Guild:
    """A guild with a text and a voice channel, the recorder role, `people` (id: (display
    name, role ids)) and the bot; `in_voice` are in the voice channel."""
    members = [
        member_payload(uid, name.lower(), name, roles) for uid, (name, roles) in people.items()
    ]
    members.append(member_payload(BOT_ID, "rollscribe", None, [], bot=True))
    data: Any = {
        "id": str(GUILD_ID),
        "name": "Team",
        "owner_id": str(next(iter(people))),
        "roles": [EVERYONE, RECORDER_ROLE],
        "channels": [
            {
                "id": str(TEXT_ID),
                "name": "general",
                "type": 0,
                "position": 0,
                "permission_overwrites": [],
            },
            {
                "id": str(VOICE_ID),
                "name": "Standup",
                "type": 2,
                "position": 1,
                "bitrate": 64000,
                "user_limit": 0,
                "permission_overwrites": [],
            },
        ],
        "members": members,
        "voice_states": [voice_state(uid, VOICE_ID) for uid in in_voice],
        "member_count": len(members),
    }
    return client._connection._add_guild_from_data(data)


def command_interaction(
    client: discord.Client,
    user: tuple[int, str, list[str]],
    subcommand: str,
    **options: str,
) -> discord.Interaction:
    """An INTERACTION_CREATE for `/record <subcommand>` from a member (id, display name,
    role ids), as the gateway sends it, parsed by discord.py."""
    user_id, name, roles = user
    payload: Any = {
        "id": str(next(_ids)),
        "application_id": str(APP_ID),
        "type": 2,
        "token": "interaction-token",
        "version": 1,
        "guild_id": str(GUILD_ID),
        "channel_id": str(TEXT_ID),
        "channel": {"id": str(TEXT_ID), "type": 0, "name": "general", "guild_id": str(GUILD_ID)},
        "member": {
            **member_payload(user_id, name.lower(), name, roles),
            "permissions": "0",
        },
        "locale": "en-US",
        "guild_locale": "en-US",
        "app_permissions": "0",
        "attachment_size_limit": 10 * 1024 * 1024,
        "entitlements": [],
        "authorizing_integration_owners": {},
        "context": 0,
        "data": {
            "id": str(next(_ids)),
            "name": "record",
            "type": 1,
            "guild_id": str(GUILD_ID),
            "options": [
                {
                    "type": 1,
                    "name": subcommand,
                    "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
                }
            ],
        },
    }
    return discord.Interaction(data=payload, state=client._connection)


def text_of(files: dict[str, bytes], name: str) -> str:
    return io.BytesIO(files[name]).read().decode()
