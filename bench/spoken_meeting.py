"""A meeting recorded one track per speaker, made on this machine with known lines and times.

Each speaker's lines are voiced by a Debian festival voice (espeak-ng voices make tiny.en's
word error rate swing by tens of points with a tenth of a second of leading silence;
festival's stay within a few points) and placed on that speaker's own track at the moment
the script says they were spoken; the rest of the track is silence, as on a Discord user's
stream or a microphone track. Used by the transcription benchmark and the tests.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

SR = 16000
VOICES = {
    "slt": "(voice_cmu_us_slt_arctic_hts)",  # festvox-us-slt-hts
    "kal": "(voice_kal_diphone)",  # festvox-kallpc16k
}
# Festival's voices speak English only; German and Spanish come from espeak-ng. Slower and
# with gaps between words (-s 130 -g 4): at espeak-ng's default speed Whisper base took the
# German voice for English, Latin or Nynorsk at some start offsets (bench/README.md, "Models").
ESPEAK_VOICES = {
    "espeak-de": ["espeak-ng", "-v", "de", "-s", "130", "-g", "4"],
    "espeak-es": ["espeak-ng", "-v", "es", "-s", "130", "-g", "4"],
}


@dataclass(frozen=True)
class Line:
    track: str
    text: str
    start_s: float  # true meeting time of its first sound
    end_s: float


@dataclass(frozen=True)
class SpokenMeeting:
    tracks: dict[str, np.ndarray]  # 16 kHz mono float32, all the same length
    lines: list[Line]  # in spoken order

    def reference(self, track: str) -> str:
        return " ".join(line.text for line in self.lines if line.track == track)

    def shifted(self, track: str, offset_s: float) -> tuple[np.ndarray, list[Line]]:
        """One track with `offset_s` more leading silence, and its lines moved with it."""
        pad = np.zeros(round(offset_s * SR), dtype=np.float32)
        lines = [
            replace(x, start_s=x.start_s + offset_s, end_s=x.end_s + offset_s)
            for x in self.lines
            if x.track == track
        ]
        return np.concatenate([pad, self.tracks[track]]), lines


def speak(text: str, voice: str, cache_dir: Path) -> np.ndarray:
    """The line voiced, trimmed to its first and last sound, 16 kHz float32 (cached)."""
    from faster_whisper.audio import decode_audio

    key = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:20]
    wav = cache_dir / f"{key}.wav"
    if not wav.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "x.wav"
            command = (
                [*ESPEAK_VOICES[voice], "-w", str(raw), "--stdin"]
                if voice in ESPEAK_VOICES
                else ["text2wave", "-eval", VOICES[voice], "-o", str(raw)]
            )
            subprocess.run(command, input=text.encode(), check=True, capture_output=True)
            shutil.move(str(raw), wav)
    return trim(decode_audio(str(wav), sampling_rate=SR))


def trim(audio: np.ndarray) -> np.ndarray:
    """From the first sound to the last: a line's true start is its first sound."""
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def build_meeting(
    script: list[tuple[str, str, float]],
    voices: dict[str, str],
    cache_dir: Path,
    lead_s: float = 1.0,
    tail_s: float = 2.0,
    extra: dict[str, np.ndarray] | None = None,
) -> SpokenMeeting:
    """`script`: (track, text, pause_s) in spoken order. A line starts `pause_s` after the
    previous line ended; a negative pause starts it before that (an interruption, heard on
    the other track at the same time). `extra`: real recordings by text, used instead of a
    voice for a line whose text matches."""
    voiced = [(track, text, pause, (extra or {}).get(text, None)) for track, text, pause in script]
    clips = [
        trim(clip) if clip is not None else speak(text, voices[track], cache_dir)
        for track, text, _pause, clip in voiced
    ]
    lines: list[Line] = []
    cursor = lead_s
    for (track, text, pause, _), clip in zip(voiced, clips, strict=True):
        start = cursor + pause if lines else lead_s
        lines.append(Line(track, text, start, start + len(clip) / SR))
        cursor = lines[-1].end_s
    total = round((max(x.end_s for x in lines) + tail_s) * SR)
    tracks = {track: np.zeros(total, dtype=np.float32) for track in voices}
    for line, clip in zip(lines, clips, strict=True):
        at = round(line.start_s * SR)
        tracks[line.track][at : at + len(clip)] += clip
    return SpokenMeeting(tracks, lines)


# Two people planning a release: 24 lines, 0.4 to 2 s between them.
PLANNING = [
    ("alice", "Good morning. Shall we start with the release plan for next week?", 0.0),
    ("bob", "Yes. The build passed last night, so we can freeze the code on Monday.", 0.8),
    ("alice", "Good. What is still open on the list of bugs?", 1.2),
    (
        "bob",
        "Two problems remain. The login page is slow, and the export fails for large files.",
        0.5,
    ),
    ("alice", "How long would the export fix take?", 1.6),
    ("bob", "About two days, if nobody pulls me into other meetings.", 0.7),
    ("alice", "Then I will keep your calendar free until Wednesday.", 1.9),
    ("bob", "Thank you. I will also write a test for it, so it does not come back.", 0.4),
    ("alice", "What about the login page? Do we know why it is slow?", 1.1),
    ("bob", "The database query runs once for every user. We should load them all at once.", 0.9),
    ("alice", "Can Sarah take that one? She wrote most of that code.", 1.4),
    ("bob", "I will ask her after lunch. She is back from her holiday today.", 0.6),
    ("alice", "Next item. The documentation still shows the old screens.", 2.0),
    ("bob", "I know. The new pictures are ready, but nobody has put them in yet.", 0.5),
    ("alice", "Please send them to me, and I will update the pages this afternoon.", 1.0),
    ("bob", "Sure. I will put them in the shared folder in ten minutes.", 1.3),
    ("alice", "And the customers? Did anyone tell them about the change in price?", 0.8),
    ("bob", "Not yet. Marketing wants to send one email to everyone on Thursday.", 1.7),
    ("alice", "That is too late. Some of them renew their contracts on Wednesday.", 0.4),
    ("bob", "You are right. I will call the marketing team today and move it forward.", 1.2),
    ("alice", "Good. Is there anything else we need to decide before Monday?", 0.9),
    ("bob", "Only the date of the party. Most people prefer Friday evening.", 1.5),
    ("alice", "Friday works for me. Let us book the room by the river.", 0.6),
    ("bob", "Great. I will send the invitation. Thanks, everyone.", 1.1),
]
PLANNING_VOICES = {"alice": "slt", "bob": "kal"}

# A German and a Spanish speaker, each on their own track (the language tests and
# `bench/models.py`): eight lines, 0.5 to 1.5 s between them.
GERMAN_SPANISH = [
    (
        "hans",
        "Guten Morgen zusammen. Wir beginnen heute mit dem Bericht über das neue Projekt.",
        0.0,
    ),
    ("lucia", "Buenos días a todos. Hoy vamos a hablar del presupuesto para el próximo año.", 0.8),
    (
        "hans",
        "Die Arbeit an der Software ist fast fertig, aber wir brauchen noch eine Woche für die "
        "Tests.",
        1.2,
    ),
    ("lucia", "El equipo de ventas ha trabajado mucho y los resultados son muy buenos.", 0.5),
    (
        "hans",
        "Das Wetter in Berlin war gestern sehr schön, deshalb sind viele Kollegen mit dem "
        "Fahrrad gekommen.",
        1.5,
    ),
    (
        "lucia",
        "Mañana tenemos una reunión con los clientes de Madrid a las diez de la mañana.",
        0.7,
    ),
    ("hans", "Bitte schicken Sie mir die Zahlen bis Freitag.", 0.9),
    ("lucia", "Por favor, envíen sus preguntas antes del jueves. Muchas gracias.", 0.6),
]
GERMAN_SPANISH_VOICES = {"hans": "espeak-de", "lucia": "espeak-es"}
GERMAN_SPANISH_LANGUAGES = {"hans": "de", "lucia": "es"}
