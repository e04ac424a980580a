"""Benchmarks that make a file per upload wait until files deleted just before are old.

On ext4 without a journal (this project's benchmark machines) every file created scans the
inodes of its block group deleted in the last minute, or the last six while their inode
table block is still unwritten (the kernel's `recently_deleted`, in `fs/ext4/ialloc.c`).
Right after a run's work folder (tens of thousands of files) was deleted, a server that makes
a file per upload spent about 1.5 times the CPU per upload and served about a quarter fewer
small uploads, for a few minutes (`bench/README.md`, "Many small uploads"): a run started
then measured the previous run's clean-up, and @tus/server, which makes two files per
upload, paid twice. So a run that deletes its work folder notes the time, and the next run
waits until six minutes have passed since: a minute is not enough, as the files a run makes
dirty the inode table blocks of the deleted inodes beside them again (measured: a run
started 65 s after the last one's clean-up still had @tus/server at 894 requests/s in its
first round and 1,515 in its third).
"""

from __future__ import annotations

import time
from pathlib import Path

# The kernel's RECENTCY_MIN + RECENTCY_DIRTY (60 + 300 s), and a margin.
SETTLE_S = 370.0


def _stamp(work: Path) -> Path:
    return work / ".deleted_at"


def wait_for_deletions_to_age(work: Path) -> None:
    """Before measuring: at least SETTLE_S since a run noted its clean-up."""
    try:
        deleted_at = float(_stamp(work).read_text())
    except (OSError, ValueError):
        return
    wait = deleted_at + SETTLE_S - time.time()
    if wait > 0:
        print(f"waiting {wait:.0f} s for the last run's deleted files to age (ext4)", flush=True)
        time.sleep(wait)


def note_deletions(work: Path) -> None:
    """After deleting a work folder: the time noted."""
    _stamp(work).write_text(f"{time.time()}\n")
