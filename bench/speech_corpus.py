"""A long spoken corpus with a known reference text, made on this machine.

Real meeting recordings with transcripts cannot be fetched here, so the benchmarks voice a
text every Debian machine ships (the GPL-3 licence text) with espeak-ng, alternating two
voices paragraph by paragraph like a two-person meeting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper.audio import decode_audio

TEXT = Path("/usr/share/common-licenses/GPL-3")
VOICES = ("en-us+m3", "en-us+f2")
SR = 16000
PAUSE_S = 0.5


@dataclass(frozen=True)
class Corpus:
    audio: np.ndarray  # 16 kHz mono float32
    reference: str
    paragraphs: int


def ensure_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "espeak-ng"], check=True)


def paragraphs() -> list[str]:
    raw = TEXT.read_text()
    body = raw.split("Preamble", 1)[1]
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in body.split("\n\n")]
    return [p for p in paragraphs if len(p.split()) >= 8]


def build_corpus(minutes: float, cache_dir: Path) -> Corpus:
    ensure_espeak()
    cache_dir.mkdir(parents=True, exist_ok=True)
    pieces: list[np.ndarray] = []
    texts: list[str] = []
    total = 0
    pause = np.zeros(int(PAUSE_S * SR), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for i, paragraph in enumerate(paragraphs()):
            if total >= minutes * 60 * SR:
                break
            wav = cache_dir / f"p{i:04d}.wav"
            if not wav.exists():
                subprocess.run(
                    [
                        "espeak-ng",
                        "-v",
                        VOICES[i % 2],
                        "-s",
                        "165",
                        "-w",
                        str(Path(tmp) / "x.wav"),
                        paragraph,
                    ],
                    check=True,
                )
                shutil.move(str(Path(tmp) / "x.wav"), wav)
            audio = decode_audio(str(wav), sampling_rate=SR)
            pieces += [audio, pause]
            texts.append(paragraph)
            total += len(audio) + len(pause)
    return Corpus(np.concatenate(pieces), " ".join(texts), len(texts))
