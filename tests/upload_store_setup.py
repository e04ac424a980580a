"""An upload store on a fresh database with one meeting, for the storage tests that drive
uploads without a server (test_write_transaction, test_prepared_statements)."""

from __future__ import annotations

from pathlib import Path

from storage.chunk_intake import ChunkIntake, Verdict
from storage.database import Database
from storage.local_blobs import LocalBlobStore
from storage.meeting_store import MeetingStore
from storage.models import Upload
from storage.schema import ensure_schema
from storage.upload_store import UploadStore, make_upload, new_upload_id
from tests.databases import database_url_for

MEETING_ID = "m1"
OWNER = "key"


class _ValidBytes(ChunkIntake):
    """Validation is not what these tests are about: every completed upload is valid."""

    async def inspect(self, upload: Upload) -> Verdict:
        return Verdict(None, 1.0)


async def fresh_database(tmp_path: Path) -> Database:
    db = Database(database_url_for(tmp_path))
    await ensure_schema(db)
    return db


async def store_with_a_meeting(db: Database, tmp_path: Path) -> UploadStore:
    """The store over the real folder blob store, and meeting `MEETING_ID` of `OWNER`."""
    await MeetingStore(db).create(
        meeting_id=MEETING_ID,
        owner=OWNER,
        title=None,
        external_id=None,
        tracks=[],
        track_labels=None,
        max_open_meetings=0,
    )
    blobs = LocalBlobStore(tmp_path / "blobs")
    return UploadStore(db, blobs, _ValidBytes(db, blobs, None))  # type: ignore[arg-type]


def chunk_upload(seq: int, length: int = 100) -> Upload:
    """An upload of track "mic"'s chunk `seq` of the meeting."""
    return make_upload(
        upload_id=new_upload_id(),
        length=length,
        meta={"meeting_id": MEETING_ID, "track": "mic", "seq": str(seq), "start_ms": "0"},
        concat=None,
        concat_parts=None,
        expires_at=None,
        owner=OWNER,
    )
