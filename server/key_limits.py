"""Per-key limits enforced: how many meetings a key may have recording, how many webhooks it
may register, and how many upload bytes it may send per UTC day. The values are
`server.key_limit_values`'; the counting is `storage.key_usage`'s.
"""

from __future__ import annotations

import time

from aiohttp import web

from server.errors import ApiError, Errors
from server.key_limit_values import KeyLimits
from storage import key_usage
from storage.database import Database

LIMITS = web.RequestKey("limits", KeyLimits)


class UploadQuota:
    """Upload bytes per key per UTC day (the count resets at 00:00 UTC)."""

    # Every tus request asks how much its key may still send; reading the count each time
    # was a tenth of the event loop's work under many small uploads. A count read less than
    # FRESH_S ago answers while the key is far from its limit: it can only be short by what
    # was accepted since, so it may let through at most a second's bytes more, never refuse
    # wrongly. Near the limit (under NEAR_LIMIT left) every request reads the database.
    FRESH_S = 1.0
    NEAR_LIMIT = 256 * 1024**2

    def __init__(self, db: Database) -> None:
        self.db = db
        self._read: dict[str, tuple[float, str, int]] = {}  # owner: (read at, UTC day, bytes)

    async def bytes_left(self, owner: str, limits: KeyLimits) -> int | None:
        """What the key may still send today; None when unlimited."""
        limit = limits.max_upload_bytes_per_day
        if not limit:
            return None
        now, day = time.monotonic(), key_usage.utc_day(time.time())
        read = self._read.get(owner)
        if read is not None and now - read[0] < self.FRESH_S and read[1] == day:
            left = limit - read[2]
            if left >= self.NEAR_LIMIT:
                return left
        sent = await key_usage.upload_bytes_today(self.db, owner)
        if len(self._read) > 10_000:  # keys come and go: the map never grows without bound
            self._read.clear()
        self._read[owner] = (now, day, sent)
        return max(0, limit - sent)

    @staticmethod
    def refuse(limits: KeyLimits, left: int, wanted: int) -> ApiError:
        """429 with Retry-After: the quota frees up at the next UTC day."""
        limit = limits.max_upload_bytes_per_day
        return ApiError(
            Errors.UPLOAD_BYTES_LIMIT,
            f"max_upload_bytes_per_day is {limit}; {left} bytes left today (UTC), "
            f"this request needs {wanted}",
            {"Retry-After": str(key_usage.seconds_until_next_utc_day(time.time()))},
        )
