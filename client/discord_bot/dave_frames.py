"""Discord's end-to-end encryption (DAVE) taken off a received Opus frame.

After transport decryption (done by the voice-receive extension), a frame of a DAVE call is
still MLS ciphertext: Opus bytes encrypted with the sender's key ratchet, followed by a
supplemental block ending in the 0xFAFA marker. discord.py 2.7 keeps the call's
`davey.DaveSession` (it runs the MLS handshake with the voice server for sending); the
receive extension does not use it, so this does, per frame and per sender.

Outcomes, each counted: decrypted; passed through (a plain frame: a call without DAVE, the
passthrough window of a transition, or the Opus silence frame, which DAVE leaves plain);
dropped (ciphertext that does not decrypt: no key for that sender yet, a broken frame, or no
session at all). A dropped frame is never written as audio: the speaker's track has a hole
there, which the muxer fills with silence or the server records as a gap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from codec.opus_packets import SILENCE_FRAME, has_dave_trailer, packet_layout_error

try:
    import davey
except ImportError:  # discord.py without the voice extra: no DAVE calls can be joined
    davey = None


@dataclass
class DaveStats:
    decrypted: int = 0
    passed_through: int = 0
    dropped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.reasons[reason] += 1


def _plain_opus(payload: bytes) -> bool:
    """Readable as Opus as it is, and not shaped like DAVE ciphertext."""
    return not has_dave_trailer(payload) and packet_layout_error(payload) is None


def session_of(voice_client: Any) -> tuple[Any, int]:
    """The DAVE session discord.py keeps for a voice connection, and the call's DAVE
    protocol version (0: the call is not end-to-end encrypted)."""
    connection = getattr(voice_client, "_connection", None)
    return (
        getattr(connection, "dave_session", None),
        int(getattr(connection, "dave_protocol_version", 0) or 0),
    )


def open_frame(
    session: Any, protocol_version: int, user_id: int, payload: bytes, stats: DaveStats
) -> bytes | None:
    """The Opus packet in `payload`, or None when it must be dropped."""
    if payload == SILENCE_FRAME:
        stats.passed_through += 1
        return payload
    if protocol_version == 0 or session is None or davey is None:
        if _plain_opus(payload):
            stats.passed_through += 1
            return payload
        stats.drop("encrypted, but the call has no DAVE session")
        return None
    if not session.ready:
        # Before the group is formed (or during a reset) only plain frames can be used.
        if _plain_opus(payload):
            stats.passed_through += 1
            return payload
        stats.drop("encrypted before the DAVE session was ready")
        return None
    try:
        opus = bytes(session.decrypt(user_id, davey.MediaType.audio, payload))
    except ValueError as exc:  # davey reports every decryption failure as ValueError
        reason = str(exc).removeprefix("Failed to decrypt: ")
        if "UnencryptedWhenPassthroughDisabled" in reason and _plain_opus(payload):
            # A plain frame outside a transition window: the sender did not encrypt it.
            # It is what it says (transport encryption still authenticated it).
            stats.passed_through += 1
            return payload
        stats.drop(reason)
        return None
    if packet_layout_error(opus) is not None:
        stats.drop("decrypted to something that is not Opus")
        return None
    if opus == payload:
        stats.passed_through += 1  # davey let a plain frame through (passthrough mode)
    else:
        stats.decrypted += 1
    return opus
