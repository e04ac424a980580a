"""Which of the server's stores cannot serve for now, if any: one answer for every caller
that tells an outage from a fault (the error middleware, the recovery sweep, the workers)."""

from __future__ import annotations

from storage.blob_store_outage import blob_store_unavailable
from storage.database_outage import database_unavailable

DATABASE = "database"
BLOB_STORE = "blob store"


def unavailable_store(error: BaseException) -> str | None:
    """DATABASE or BLOB_STORE when `error` means that store cannot serve for now (not a
    fault of anything asked of it); None for anything else."""
    if database_unavailable(error):
        return DATABASE
    if blob_store_unavailable(error):
        return BLOB_STORE
    return None
