"""A transcription worker process: claims jobs from the database, transcribes, commits.

Run as `rollscribe worker` or started by the server's pool. It knows the database and the
blob store, never HTTP. The model is loaded once per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from codec.decode import decode_blocks
from storage.blob_store import BlobStore, BlobStoreError, blob_store_for
from storage.blob_store_outage import blob_store_unavailable
from storage.database import Database
from storage.database_outage import database_unavailable
from storage.job_queue import (
    Carry,
    DetectedLanguage,
    Job,
    NewSegment,
    NewWord,
    claim_next_job,
    complete_job,
    extend_lease,
    fail_job,
    postpone_job,
)
from storage.meeting_completion import assemble_if_ready
from storage.schema import SchemaMismatch, ensure_schema
from storage.store_outage import unavailable_store
from transcribe.carry import SAMPLE_RATE, AudioPiece
from transcribe.engine import EngineSettings, EngineUnavailable, WhisperEngine
from transcribe.model_catalog import ModelUnavailable
from transcribe.model_catalog import resolve as resolve_model
from transcribe.track_step import TrackCarry, transcribe_blocks
from transcribe.worker_config import WorkerSettings, add_worker_arguments, settings_from_args

log = logging.getLogger("rollscribe.worker")


@dataclass(frozen=True)
class JobOutcome:
    segments: list[NewSegment]
    carry: Carry | None
    detected: DetectedLanguage | None = None


def chunk_blocks(path: str | os.PathLike[str], start_ms: int) -> Iterator[AudioPiece]:
    """A chunk's audio block by block, each with its meeting time."""
    position = 0
    for samples in decode_blocks(path):
        yield AudioPiece(start_ms + round(position * 1000 / SAMPLE_RATE), samples)
        position += len(samples)


async def run_job(engine: WhisperEngine, blobs: BlobStore, job: Job) -> JobOutcome:
    """Fetch the audio and carry, transcribe in a thread, store the carry for the next job."""
    carry = None
    if job.carry_in is not None:
        samples = await blobs.read_carry(job.carry_in.path)
        carry = TrackCarry.from_stored(job.carry_in.start_ms, samples, job.carry_in.state)
    if job.kind == "tail":
        assert carry is not None
        result = await asyncio.to_thread(
            transcribe_blocks, engine, carry, [], job.flush, job.language
        )
    else:
        async with blobs.local_copy(job.upload_id) as path:
            blocks = chunk_blocks(path, job.start_ms)
            result = await asyncio.to_thread(
                transcribe_blocks, engine, carry, blocks, job.flush, job.language
            )
    carry_out = None
    if result.carry is not None and len(result.carry.audio.samples) > 0:
        audio = result.carry.audio
        name = await blobs.write_carry(job.chunk_id, audio.samples)
        carry_out = Carry(name, audio.start_ms, len(audio.samples), result.carry.stored_state())
    segments = [
        NewSegment(
            s.start_ms,
            s.end_ms,
            s.text,
            tuple(NewWord(w.start_ms, w.end_ms, w.text, w.probability) for w in s.words),
        )
        for s in result.segments
    ]
    detected = result.detected
    return JobOutcome(
        segments,
        carry_out,
        DetectedLanguage(detected.language, detected.probability) if detected else None,
    )


# While the blob store cannot serve, every job claimed would fail at once and the worker
# would take the next: a claim and a postponement (two writes, two events) per queued chunk
# in a moment. While the database cannot, the worker process exited, and its restarts (an
# interpreter and its imports each, about 1.5 s of CPU) and their tracebacks went on for as
# long as the outage did. It waits instead, longer each time it meets the outage again.
MAX_OUTAGE_PAUSE_S = 60.0


def outage_pause_s(outages_in_a_row: int) -> float:
    """How long a worker waits after meeting a store outage `outages_in_a_row` times without
    the store serving in between: 2, 4, 8 ... seconds, to at most MAX_OUTAGE_PAUSE_S."""
    return min(MAX_OUTAGE_PAUSE_S, 2.0 ** max(1, outages_in_a_row))


class Worker:
    def __init__(self, settings: WorkerSettings, engine: WhisperEngine | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.blobs = blob_store_for(settings.data_dir, settings.blob_url, settings.s3_endpoint_url)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.engine = engine
        self.stopping = asyncio.Event()
        # Outages met since the store last served: the pauses grow with them.
        self._blob_outages = 0  # jobs postponed since one last fetched its audio
        self._failed_turns = 0  # turns that met an outage since a claim last went through

    async def _pause(self, seconds: float) -> None:
        """Waits `seconds`, or until the worker is asked to stop."""
        # Not wait_for: on 3.11 it can drop a cancellation (storage/event_feed.py).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    async def _heartbeat(self, job: Job, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                extended = await extend_lease(self.db, job, self.settings.lease_s)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                # The lease may outlast the outage: the job goes on, and its commit says.
                log.warning("lease on chunk %s not extended: %s", job.chunk_id, exc)
                continue
            if not extended:
                lost.set()
                return

    async def run_one(self) -> bool:
        """Claim and run one job. False when the queue had nothing to claim."""
        job = await claim_next_job(self.db, self.owner, self.settings.lease_s)
        self._failed_turns = 0
        if job is None:
            return False
        assert self.engine is not None
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(job, lost))
        started = time.monotonic()
        try:
            outcome = await run_job(self.engine, self.blobs, job)
        except Exception as exc:  # a bad chunk must not kill the worker
            heartbeat.cancel()
            error = f"{type(exc).__name__}: {exc}"
            if blob_store_unavailable(exc):
                # Nothing wrong with the chunk: it waits, its attempt given back, and so
                # does this worker, before it claims another that would fail the same way.
                self._blob_outages += 1
                pause = outage_pause_s(self._blob_outages)
                log.warning(
                    "job %s/%s seq %s postponed %.0f s: the blob store is unavailable (%s)",
                    *(job.meeting_id, job.track, job.seq, pause, exc),
                )
                await postpone_job(self.db, job, error, pause)
                await self._pause(pause)
                return True
            log.exception("job %s/%s seq %s failed", job.meeting_id, job.track, job.seq)
            await fail_job(self.db, job, error, self.settings.retry)
            return True
        heartbeat.cancel()
        self._blob_outages = 0
        elapsed = time.monotonic() - started
        if lost.is_set() or not await self._complete(job, outcome, elapsed):
            log.warning("lease on chunk %s was lost; result discarded", job.chunk_id)
            return True
        if job.carry_in is not None:
            # Consumed and committed: no job reads it again (a job that failed before its
            # commit left it in place for the next attempt).
            await self.blobs.delete_carry(job.carry_in.path)
        await assemble_if_ready(self.db, job.meeting_id)
        return True

    async def _complete(self, job: Job, outcome: JobOutcome, elapsed: float) -> bool:
        """Commits the job's result, through a database outage: the transcription is the
        expensive part, and the commit's compare-and-set on the lease tells whether it
        still counts (False once another worker has the chunk)."""
        while True:
            try:
                return await complete_job(
                    self.db, job, outcome.segments, outcome.carry, elapsed, outcome.detected
                )
            except Exception as exc:
                if not database_unavailable(exc) or self.stopping.is_set():
                    raise
                await self._wait_out(exc, f"chunk {job.chunk_id} transcribed, its commit")

    async def _wait_out(self, exc: BaseException, what: str = "the next turn") -> None:
        """After a turn that met a store outage: the pause before `what` is tried again,
        longer for each such turn since a claim last went through."""
        self._failed_turns += 1
        pause = outage_pause_s(self._failed_turns)
        which = unavailable_store(exc)
        log.warning("the %s is unavailable (%s); %s waits %.0f s", which, exc, what, pause)
        await self._pause(pause)

    async def run(self) -> None:
        # A worker that cannot start (the database unreachable, its schema not this code's)
        # says so and exits: a wrong URL is told at once. Once started, it waits outages out.
        await ensure_schema(self.db)  # SchemaMismatch: this worker's code and the database differ
        await self.blobs.start()  # BlobStoreError: the bucket or endpoint is unusable
        if self.engine is None:
            self.engine = await asyncio.to_thread(
                WhisperEngine,
                EngineSettings(
                    model=self.settings.model,
                    device=self.settings.device,
                    compute_type=self.settings.compute_type,
                    cpu_threads=self.settings.cpu_threads,
                ),
            )
        log.info("worker %s ready", self.owner)
        ready = self.settings.data_dir / "workers" / str(os.getpid())
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.write_text(self.owner)  # /readyz: this process has its model loaded
        try:
            while not self.stopping.is_set():
                try:
                    ran = await self.run_one()
                except Exception as exc:
                    if unavailable_store(exc) is None:
                        raise
                    await self._wait_out(exc)
                    continue
                if not ran:
                    await self._pause(self.settings.poll_s)
        finally:
            ready.unlink(missing_ok=True)
            await self.blobs.close()
            await self.db.close()


def run_from_args(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO is plugin chatter
    settings = settings_from_args(args)
    try:
        resolve_model(settings.model)  # a model that cannot be used: say so before anything
    except ModelUnavailable as exc:
        sys.exit(f"rollscribe worker: {exc}")

    async def _main() -> None:
        worker = Worker(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stopping.set)
        await worker.run()

    try:
        asyncio.run(_main())
    except (SchemaMismatch, BlobStoreError, ModelUnavailable, EngineUnavailable) as exc:
        sys.exit(f"rollscribe worker: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rollscribe worker")
    add_worker_arguments(parser)
    run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
