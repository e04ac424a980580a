"""A worker holds a block of a chunk at a time: its memory does not grow with the chunk's
length, and cutting a chunk into blocks changes nothing of its transcript."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from codec.decode import decode_blocks, decode_to_16k_mono
from tests.conftest import REFERENCE, words
from tests.server_process import JFK, ROOT
from transcribe.carry import SAMPLE_RATE, AudioPiece
from transcribe.track_step import transcribe_blocks

pytestmark = pytest.mark.storage_free

# Runs one chunk through the worker's own path (decode in blocks, a step per block) in a
# fresh process and prints how much the peak resident memory grew meanwhile.
PEAK_GROWTH = """
import resource, sys
from codec.ogg_mux import OggOpusMuxer
from codec.opus_packets import SILENCE_FRAME
from transcribe.engine import EngineSettings, WhisperEngine
from transcribe.track_step import transcribe_blocks
from transcribe.worker import chunk_blocks

seconds, path = int(sys.argv[1]), sys.argv[2]
mux = OggOpusMuxer(serial=3)
with open(path, "wb") as f:
    for i in range(1, seconds * 50 + 1):
        f.write(mux.write_packet(SILENCE_FRAME, mux.pre_skip + i * 960))
    f.write(mux.close())
engine = WhisperEngine(EngineSettings())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
transcribe_blocks(engine, None, chunk_blocks(path, 0), flush=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _peak_growth_kb(seconds: int, tmp_path: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_GROWTH, str(seconds), str(tmp_path / f"{seconds}.opus")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(out.stdout.split()[-1])


def test_worker_memory_does_not_grow_with_the_chunk_length(tmp_path: Path) -> None:
    short = _peak_growth_kb(60, tmp_path)
    long = _peak_growth_kb(600, tmp_path)  # the longest chunk --max-chunk-seconds allows
    # Decoded whole, 600 s took ~590 MB more than 60 s (features of the whole chunk).
    assert long - short < 64 * 1024, (short, long)


def test_decoding_in_blocks_gives_the_same_samples() -> None:
    whole = decode_to_16k_mono(JFK)
    blocks = list(decode_blocks(JFK, block_seconds=3.0))
    assert [len(b) for b in blocks[:-1]] == [3 * SAMPLE_RATE] * (len(blocks) - 1)
    assert np.array_equal(np.concatenate(blocks), whole)
    reference, rate = soundfile.read(JFK, dtype="float32")
    assert abs(len(whole) / SAMPLE_RATE - len(reference) / rate) < 0.01


def test_a_chunk_in_blocks_reads_as_the_chunk_whole(whisper_engine, jfk_audio) -> None:
    # 44 s: jfk, 20 s of silence, jfk again; blocks of 7 s put block edges inside speech.
    # The second reading starts after the model's first 30 s window: speech across that
    # edge is read differently on different CPUs (on an AMD EPYC both ways of reading it
    # dropped "and so my fellow americans ask not"), and it is not what this test is about
    # (tests/transcribe/test_long_form.py reads across it).
    track = np.zeros(44 * SAMPLE_RATE, dtype=np.float32)
    track[: len(jfk_audio)] = jfk_audio
    track[31 * SAMPLE_RATE : 31 * SAMPLE_RATE + len(jfk_audio)] = jfk_audio
    step = 7 * SAMPLE_RATE
    blocks = [
        AudioPiece(round(i * 1000 / SAMPLE_RATE), track[i : i + step])
        for i in range(0, len(track), step)
    ]
    whole = transcribe_blocks(whisper_engine, None, [AudioPiece(0, track)], flush=True)
    cut = transcribe_blocks(whisper_engine, None, blocks, flush=True)
    assert cut.carry is None and whole.carry is None
    assert words(" ".join(s.text for s in cut.segments)) == REFERENCE * 2
    # Each block's log-mel is floored at its own loudest frame, so word times may move a
    # little (and a line may be cut at another pause); the words and where they are stay.
    cut_words = [w for s in cut.segments for w in s.words]
    whole_words = [w for s in whole.segments for w in s.words]
    assert [w.text for w in cut_words] == [w.text for w in whole_words]
    moved = [abs(a.start_ms - b.start_ms) for a, b in zip(cut_words, whole_words, strict=True)]
    assert max(moved) <= 500
