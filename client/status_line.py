"""The recorder's live status line (on a terminal only) and its problem messages (always)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TextIO

METER_WIDTH = 10
METER_FLOOR_DB = -60.0


def meter(level_db: float, width: int = METER_WIDTH) -> str:
    """A level as a bar: empty at -60 dBFS or below, full at 0."""
    filled = round(width * min(1.0, max(0.0, 1.0 - level_db / METER_FLOOR_DB)))
    return "#" * filled + "." * (width - filled)


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@dataclass
class Status:
    elapsed_s: float = 0.0
    levels: dict[str, float] = field(default_factory=dict)
    spooled: int = 0
    uploaded: int = 0
    lag_s: float | None = None
    note: str = ""


def render(status: Status) -> str:
    tracks = "  ".join(f"{name} {meter(db)}" for name, db in sorted(status.levels.items()))
    lag = "-" if status.lag_s is None else f"{status.lag_s:.0f} s"
    parts = [
        clock(status.elapsed_s),
        tracks,
        f"segments {status.spooled} spooled / {status.uploaded} uploaded",
        f"transcription lag {lag}",
    ]
    if status.note:
        parts.append(status.note)
    return "  ".join(p for p in parts if p)


class StatusLine:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.status = Status()
        self._lock = threading.Lock()
        self._width = 0

    def show(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            line = render(self.status)
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()

    def say(self, message: str) -> None:
        """A problem or an outcome: printed on its own line, terminal or not."""
        with self._lock:
            if self.enabled and self._width:
                self.stream.write("\n")
                self._width = 0
            self.stream.write(f"rollscribe record: {message}\n")
            self.stream.flush()

    def end(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
