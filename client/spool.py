"""A recording client's durable local state: which audio became which segment, and what the
server confirmed. Written atomically after every change, so a killed recorder resumes."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class TrackState:
    file: str | None = None  # a replayed file
    device: str | None = None  # a recorded device's id
    samples_done: int = 0  # 48 kHz samples already in closed segments
    next_seq: int = 0
    finished: bool = False  # a file: all of it is in closed segments
    label: str | None = None  # shown in the transcript instead of the track's name
    kept_until_ms: float = 0.0  # end of the track's last closed segment (Discord bot)


@dataclass
class SegmentState:
    track: str
    seq: int
    start_ms: int
    path: str
    upload_url: str | None = None
    uploaded: bool = False
    closed_at: float | None = None  # wall clock, for the upload lag (benchmarks, support)
    uploaded_at: float | None = None
    failed: str | None = None  # why the server refused it for good (it stays in the spool)


@dataclass
class SpoolState:
    server: str
    external_id: str = field(default_factory=lambda: f"rec-{uuid.uuid4()}")
    meeting_id: str | None = None
    title: str | None = None
    language: str | None = None  # the meeting's, when the client names one ("auto", "de")
    # Wall-clock time of the meeting's start: a run that resumes after a crash places its
    # audio at (now - started_at), so the outage is a gap.
    started_at: float = field(default_factory=time.time)
    segment_seconds: float = 30.0
    tracks: dict[str, TrackState] = field(default_factory=dict)
    segments: list[SegmentState] = field(default_factory=list)
    finalized: bool = False
    # What a client needs to pick the meeting up again (the Discord bot: guild and channels).
    source: dict[str, str] = field(default_factory=dict)


class Spool:
    def __init__(self, folder: Path, max_bytes: int, budget_folder: Path | None = None) -> None:
        """`budget_folder`: where `max_bytes` is counted, when several spools share one cap
        (the Discord bot's meetings, each in its own folder under one spool)."""
        self.folder = folder
        self.max_bytes = max_bytes
        self.budget_folder = budget_folder or folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state_path = folder / "state.json"

    def load(self) -> SpoolState | None:
        if not self.state_path.exists():
            return None
        raw = json.loads(self.state_path.read_text())
        state = SpoolState(**{k: v for k, v in raw.items() if k not in ("tracks", "segments")})
        state.tracks = {k: TrackState(**v) for k, v in raw["tracks"].items()}
        state.segments = [SegmentState(**s) for s in raw["segments"]]
        return state

    def save(self, state: SpoolState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def segment_path(self, track: str, seq: int) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in track)
        return self.folder / f"{safe}-{seq:06d}.opus"

    def used_bytes(self) -> int:
        total = 0
        for pattern in ("*.opus", "*.part"):
            for path in self.budget_folder.rglob(pattern):
                try:
                    total += path.stat().st_size
                except FileNotFoundError:  # uploaded and deleted meanwhile
                    pass
        return total

    def full(self) -> bool:
        return self.used_bytes() >= self.max_bytes
