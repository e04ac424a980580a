"""Why storage said no to a change: a named rule, not an HTTP answer.

The repositories in `storage` check the rules that need the database (a chunk names a
meeting that exists, a key is under its limit) in the same transaction as the write they
guard, and raise `Refused` when one fails. `server/errors.py` renders each rule as the API
error of the same name, so storage knows nothing of HTTP and the server keeps one table.
"""

from __future__ import annotations

import enum


class Rule(enum.Enum):
    CHUNK_METADATA = "chunk metadata is invalid"
    MEETING_NOT_FOUND = "no such meeting"
    UNKNOWN_TRACK = "the meeting does not declare this track"
    CHUNK_LENGTH_CONFLICT = "a chunk's upload is created again with another length"
    MEETING_CLOSED = "the meeting is complete"
    SEQ_AFTER_FINALIZE = "the seq is past the finalized last seq"
    UPLOAD_ACCEPTED = "the upload is an accepted chunk"
    OPEN_MEETINGS_LIMIT = "the key has as many recording meetings as it may"
    WEBHOOKS_LIMIT = "the key has as many webhooks as it may"
    FINALIZE_CONFLICT = "finalized before with other last seqs"
    INVALID_FIELD = "a field names something the database cannot hold"
    CHUNK_NOT_FOUND = "no such chunk"
    NOT_RETRYABLE = "the chunk is not failed"
    MEETING_BUSY = "a chunk of the meeting is being written or transcribed"
    WEBHOOK_NOT_FOUND = "no such webhook"


class Refused(Exception):
    def __init__(self, rule: Rule, detail: str) -> None:
        super().__init__(f"{rule.value}: {detail}")
        self.rule = rule
        self.detail = detail
