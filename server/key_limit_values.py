"""What one API key may do: the limits' values. Server-wide defaults come from `rollscribe
serve` flags; a line of the keys file may override any of them for its key. 0 means
unlimited.

Apart from their enforcement (`server.key_limits`) so that the keys file and `rollscribe keys`
read them without loading the web framework and the database (a second of CPU at each
`keys` command).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class KeyLimits:
    # A recorder holds one meeting per call it records: 200 is far past any honest use and
    # still bounds how many rows one leaked key can open.
    max_open_meetings: int = 200
    # Opus speech is ~15 MB an hour a track: 100 GiB is thousands of track-hours a day.
    max_upload_bytes_per_day: int = 100 * 1024**3
    max_webhooks: int = 25

    def with_overrides(self, overrides: dict[str, int]) -> KeyLimits:
        return replace(self, **overrides)


LIMIT_NAMES = tuple(f.name for f in fields(KeyLimits))
