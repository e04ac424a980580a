"""Whether a failure means the blob store cannot serve for now, rather than a fault.

An S3-compatible store that cannot be reached (refused, reset, timed out) or that answers
it cannot serve (503 SlowDown, 500 InternalError), once the client's own retries are spent,
says nothing about the request that met it: its client should try again shortly (503 with
Retry-After), and a transcription job that could not fetch its chunk should be tried again
without spending one of the chunk's attempts (`storage/job_queue.postpone_job`). Before,
such a request was answered 500 with a traceback, and a store away for longer than a job's
three quick attempts (2 s and 4 s apart) left chunks FAILED that nothing was wrong with.

Everything else stays a fault: a missing bucket or object, denied credentials, a bad
certificate (retrying does not mend those). The folder store has no such state: a folder
that cannot be written is a fault of the machine, reported as one.
"""

from __future__ import annotations

import sys

# S3's answers that mean "not now" (the client retries them before giving up): throttling,
# a failure on its side, a request it gave up waiting for.
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
_UNAVAILABLE_STATUSES = {500, 502, 503, 504}


def blob_store_unavailable(error: BaseException) -> bool:
    # botocore is imported with the S3 store only (`storage/blob_store.py`): importing it
    # here would cost every server and worker process about 20 ms of CPU at start on the
    # default folder store, where no botocore error can arise.
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is None:
        return False
    if isinstance(error, botocore.SSLError):  # a certificate or TLS: not mended by waiting
        return False
    # Could not connect, connection closed or reset, connect or read timed out, a response
    # body cut off (botocore's ResponseStreamingError).
    if isinstance(error, botocore.ConnectionError | botocore.HTTPClientError):
        return True
    if isinstance(error, botocore.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in _UNAVAILABLE_CODES or status in _UNAVAILABLE_STATUSES
    return False
