"""The API keys in force, with the keys file re-read when it changes (no restart).

The server polls the file's identity (inode, size, mtime) once a second, off the event
loop; a changed file is parsed whole and swapped in at once. A file that cannot be read or
parsed after a change keeps the keys loaded before, with one log line naming the problem.

Whether the server checks keys at all is decided at start, never by a reload: a server
that started with keys never becomes key-less. A file emptied of keys refuses every request
(401) until one is added: emptying it is how an operator revokes everything at once. A
server that started without keys (loopback only) ignores keys that appear later, with one
log line, since turning them on would hide every meeting made so far (owner "").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from server.auth import ApiKeys, load_api_keys
from server.key_limit_values import KeyLimits

log = logging.getLogger("rollscribe.keys")

POLL_S = 1.0
Signature = tuple[int, int, int] | None  # (inode, size, mtime ns); None: no file


def _signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class KeyRing:
    def __init__(
        self,
        keys_file: str | None,
        env_keys: str | None,
        defaults: KeyLimits,
        poll_s: float = POLL_S,
    ) -> None:
        self.keys_file = Path(keys_file) if keys_file else None
        self.env_keys = env_keys
        self.defaults = defaults
        self.poll_s = poll_s
        # Taken before the first read: a change while it is read is seen at the next poll.
        self._signature = _signature(self.keys_file) if self.keys_file else None
        self.current: ApiKeys = load_api_keys(keys_file, env_keys, defaults)  # errors stop start
        self.keyed = self.current.enabled
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def fixed(cls, keys: ApiKeys, defaults: KeyLimits | None = None) -> KeyRing:
        """Keys that never change (no file to watch)."""
        ring = cls(None, None, defaults or KeyLimits())
        ring.current = keys
        ring.keyed = keys.enabled
        return ring

    def owner_active(self, owner: str) -> bool:
        """Whether requests of this owner are still accepted (a revoked key's are not)."""
        return not self.keyed or owner in self.current.owners

    async def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True if the keys in force were replaced."""
        if self.keys_file is None:
            return False
        signature = await asyncio.to_thread(_signature, self.keys_file)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            keys = await asyncio.to_thread(
                load_api_keys, str(self.keys_file), self.env_keys, self.defaults
            )
        except (OSError, ValueError) as exc:
            log.error(
                "keys file %s changed but cannot be used (%s): keeping the %d keys loaded before",
                self.keys_file,
                exc,
                len(self.current.keys),
            )
            return False
        if not self.keyed:
            if keys.enabled:
                log.warning(
                    "keys file %s now holds keys, but this server started without keys: "
                    "restart it to turn API keys on",
                    self.keys_file,
                )
            return False
        self.current = keys
        if keys.enabled:
            log.info("keys file %s reloaded: %d keys", self.keys_file, len(keys.keys))
        else:
            log.warning(
                "keys file %s holds no key: every request is refused (401) until one is added",
                self.keys_file,
            )
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.reload_if_changed()
            except Exception:  # never let the watcher die: keys would freeze silently
                log.exception("keys file watcher")

    def start(self) -> None:
        if self.keys_file is not None and self._task is None:
            self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
