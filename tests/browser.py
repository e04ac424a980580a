"""Debian's Chromium, driven by Playwright (its own browser download is never used), with a
fake microphone that says known speech."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.server_process import JFK

CHROMIUM = "/usr/bin/chromium"
RATE = 48000
LEAD_S = 1.0  # silence before the speech
SPEECH_S = 11.0  # jfk.flac
TAIL_S = 60.0  # silence after it: the file is played once (%noloop), never repeated


def speech_wav(path: Path) -> Path:
    """jfk.flac between silences, at 48 kHz: what Chromium's fake microphone plays."""
    audio, rate = sf.read(JFK, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    # Linear interpolation is enough to hand a test microphone 48 kHz.
    n = int(len(audio) * RATE / rate)
    speech = np.interp(np.arange(n) * rate / RATE, np.arange(len(audio)), audio)
    silence = lambda seconds: np.zeros(int(RATE * seconds), np.float32)  # noqa: E731
    sf.write(
        path,
        np.concatenate([silence(LEAD_S), speech.astype(np.float32), silence(TAIL_S)]),
        RATE,
        subtype="PCM_16",
    )
    return path


@contextmanager
def chromium(fake_audio: Path) -> Iterator[object]:
    """A headless Chromium whose microphone plays `fake_audio` from its start each time a
    page opens it, with media permission granted without asking."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={fake_audio}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module", name="browser")
def speaking_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The browser of a test module, its microphone saying jfk.flac."""
    with chromium(speech_wav(tmp_path_factory.mktemp("speech") / "speech.wav")) as browser:
        yield browser
