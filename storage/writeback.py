"""Start the kernel writing a range of a file to the disk, without waiting for it: Linux's
sync_file_range(2) with SYNC_FILE_RANGE_WRITE.

A large PATCH's batches reach the page cache as they arrive; left there, the fsync that
acknowledges the body writes all of it to the disk after the last byte, while the client
waits (3.4 ms of a 5 MiB PATCH here). Started as each batch lands, that writing overlaps the
rest of the body, and the fsync waits for little more than the last batch (`bench/README.md`,
"Upload throughput"). fdatasync per batch was tried instead and gained nothing: it waits, so
it held up the next batch.

Python's `os` has fsync and fdatasync, which wait, and no sync_file_range, and no well-kept
package wraps it; it is one libc call, so it is called through ctypes (no compiled code).
It is a hint only: where it does not exist (not Linux) or fails, nothing happens, and the
fsync that acknowledges the bytes still makes them durable."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the range's dirty pages, do not wait


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load()


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask for `length` bytes of `fd` from `offset` to go to the disk now; True if the
    kernel took the request. Blocking only while the device's queue is full: call it off
    the event loop, as every file call here is."""
    if _sync_file_range is None or length <= 0:
        return False
    return _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0
