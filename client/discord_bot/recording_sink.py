"""The voice-receive sink: each speaker's Opus packets, DAVE removed, into the recording.

discord-ext-voice-recv calls `write()` on its packet-router thread, in RTP order per
speaker (its jitter buffer), with `FakePacket`s where a packet was lost and, with some
sinks upstream, `SilencePacket`s. Neither is audio: the recording places packets by their
RTP timestamps, so a lost packet is a hole it fills with silence, and a silence packet adds
nothing. A packet whose speaker is not known yet (its SSRC not mapped to a user) cannot be
attributed and is dropped; Discord maps an SSRC before its first voice packet in practice.
"""

from __future__ import annotations

import logging
from typing import Any

from discord.ext import voice_recv

from client.discord_bot.channel_recording import ChannelRecording
from client.discord_bot.dave_frames import open_frame, session_of

log = logging.getLogger("rollscribe.discord")


class RecordingSink(voice_recv.AudioSink):
    def __init__(self, recording: ChannelRecording) -> None:
        super().__init__()
        self.recording = recording
        self.unattributed = 0

    def wants_opus(self) -> bool:
        return True  # muxed as received: no decoding, no re-encoding

    def write(self, user: Any, data: voice_recv.VoiceData) -> None:
        packet = data.packet
        if not packet or getattr(packet, "is_silence", lambda: False)():
            return  # a FakePacket (lost) or a SilencePacket: a hole, filled by timing
        if user is None:
            self.unattributed += 1
            return
        session, version = session_of(self.voice_client)
        stats = self.recording.stats.dave
        dropped_before = stats.dropped
        opus = open_frame(session, version, user.id, bytes(packet.decrypted_data or b""), stats)
        if opus is None:
            if stats.dropped - dropped_before and stats.dropped in (1, 10, 100, 1000, 10000):
                log.warning(
                    "%s: %d frames dropped that did not decrypt (%s)",
                    self.recording.state.external_id,
                    stats.dropped,
                    ", ".join(f"{n} {r}" for r, n in stats.reasons.most_common(3)),
                )
            return
        self.recording.feed(user.id, user.display_name, packet.ssrc, packet.timestamp, opus)

    def cleanup(self) -> None:
        # Called when listening stops, including on a voice reconnect: the recording goes
        # on until /record stop, the empty-channel timer or shutdown ends it.
        pass
