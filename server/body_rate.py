"""A minimum body rate, as Apache's mod_reqtimeout `MinRate` has it: a request body must
bring at least `bytes_per_s` on average over each window of `window_s`; below it the
request is ended (a client trickling a byte a second would otherwise hold a connection and
an upload lock for days). Pure: the caller passes the clock."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MinimumRate:
    bytes_per_s: float  # 0: no minimum
    started_at: float
    window_s: float = 10.0
    _window_start: float = field(init=False)
    _window_bytes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._window_start = self.started_at

    def too_slow(self, received: int, now: float) -> bool:
        """Count `received` more bytes at `now`; True when the window that just ended
        brought less than the minimum."""
        self._window_bytes += received
        elapsed = now - self._window_start
        if self.bytes_per_s <= 0 or elapsed < self.window_s:
            return False
        slow = self._window_bytes < self.bytes_per_s * elapsed
        self._window_start, self._window_bytes = now, 0
        return slow

    def describe(self) -> str:
        return f"less than {self.bytes_per_s:g} bytes/s over {self.window_s:g} s"
