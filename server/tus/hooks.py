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

    async def on_progress(self, upload: Upload) -> None:
        """The upload received its first bytes."""

    async def on_complete(self, upload: Upload) -> None:
        """Every byte is durable."""

    async def on_terminate(self, upload: Upload) -> None:
        """Before a DELETE removes the bytes. May raise ApiError to refuse."""
