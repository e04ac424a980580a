"""What the tus handler tells the rest of the server: it knows uploads, not meetings."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Upload


class ExistingUpload(Exception):
    """Creation resolved to an upload that already exists (a resumed chunk): answer with it."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id


class UploadHooks(Protocol):
    async def on_create(self, session: AsyncSession, upload: Upload) -> None:
        """In the creating transaction. May raise ApiError (refuse) or ExistingUpload."""

    async def inspect(self, upload: Upload) -> object:
        """Every byte is durable: look at them (off the event loop) before the transaction
        that records completion. The result is handed to `on_complete` as it is."""

    async def on_progress(self, session: AsyncSession, upload: Upload) -> None:
        """In the transaction that records the upload's first bytes."""

    async def on_complete(self, session: AsyncSession, upload: Upload, verdict: object) -> None:
        """In the transaction that records the last bytes (or creates a complete upload)."""

    async def on_terminate(self, upload: Upload) -> None:
        """Before a DELETE removes the bytes. May raise ApiError to refuse."""
