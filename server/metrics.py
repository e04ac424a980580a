"""Prometheus metrics (prometheus-client).

Backlog figures come from the database at scrape time (`storage.backlog`), so jobs run by
worker processes or other nodes count, and histograms survive restarts. Per-meeting series
exist only for meetings still recording or finalizing: they disappear when a meeting ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from server.auth import OWNER
from storage.backlog import Backlog, read_backlog
from storage.database import Database
from storage.metric_rollups import HistogramCounts
from storage.outbox import OutboxStats, outbox_stats


def _histogram(name: str, doc: str, counts: HistogramCounts | None) -> Metric:
    counts = counts or HistogramCounts([], 0, 0.0)
    buckets = [(f"{le:g}", count) for le, count in counts.buckets]
    buckets.append(("+Inf", counts.count))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=counts.sum)


class BacklogCollector:
    """Yields the figures of the snapshot taken just before each scrape."""

    def __init__(self, workers: Callable[[], int]) -> None:
        self.snapshot = Backlog()
        self.outbox = OutboxStats({}, 0.0)
        self.workers = workers
        # Whose meetings the per-meeting series show: meeting ids are private to their key.
        self.viewer = ""

    def collect(self) -> Iterator[Metric]:
        b = self.snapshot
        yield GaugeMetricFamily(
            "rollscribe_queue_jobs", "Chunks queued or waiting", value=b.queued_jobs
        )
        yield GaugeMetricFamily(
            "rollscribe_queue_audio_seconds",
            "Seconds of audio queued or waiting",
            value=b.queued_audio_s,
        )
        yield GaugeMetricFamily(
            "rollscribe_queue_oldest_job_age_seconds",
            "Age of the oldest queued job",
            value=b.oldest_queued_age_s,
        )
        lag = GaugeMetricFamily(
            "rollscribe_meeting_lag_audio_seconds",
            "Audio uploaded but not yet transcribed, per active meeting",
            labels=["meeting"],
        )
        since = GaugeMetricFamily(
            "rollscribe_meeting_since_last_chunk_seconds",
            "Time since the newest chunk of an active meeting landed",
            labels=["meeting"],
        )
        for meeting_id, m in sorted(b.meetings.items()):
            if m.owner != self.viewer:
                continue
            lag.add_metric([meeting_id], m.pending_audio_s)
            if m.since_newest_chunk_s is not None:
                since.add_metric([meeting_id], m.since_newest_chunk_s)
        yield lag
        yield since
        chunks = GaugeMetricFamily("rollscribe_chunks", "Chunks by state", labels=["state"])
        for state, count in sorted(b.chunks_by_state.items()):
            chunks.add_metric([state], count)
        yield chunks
        workers = GaugeMetricFamily(
            "rollscribe_workers", "Transcription workers", labels=["status"]
        )
        workers.add_metric(["busy"], b.transcribing)
        workers.add_metric(["idle"], max(0, self.workers() - b.transcribing))
        yield workers
        deliveries = GaugeMetricFamily(
            "rollscribe_webhook_deliveries", "Webhook deliveries by status", labels=["status"]
        )
        for status in ("pending", "delivered", "dead"):
            deliveries.add_metric([status], self.outbox.by_status.get(status, 0))
        yield deliveries
        yield GaugeMetricFamily(
            "rollscribe_webhook_oldest_undelivered_age_seconds",
            "Age of the oldest event not yet delivered",
            value=self.outbox.oldest_undelivered_age_s,
        )
        h = b.histograms
        yield _histogram(
            "rollscribe_transcription_rtf",
            "Transcription time / audio duration per chunk",
            h.get("transcription_rtf"),
        )
        yield _histogram(
            "rollscribe_chunk_lag_seconds",
            "Upload complete to transcribed, per chunk",
            h.get("chunk_lag_s"),
        )
        yield _histogram(
            "rollscribe_meeting_end_latency_seconds",
            "Finalize to assembled, per meeting",
            h.get("meeting_end_s"),
        )


class Metrics:
    def __init__(self, db: Database, workers: Callable[[], int]) -> None:
        self.db = db
        self.registry = CollectorRegistry()
        self.backlog = BacklogCollector(workers)
        self.registry.register(self.backlog)  # type: ignore[arg-type]
        # With several server processes (`--processes`), each counts into its own file and
        # a scrape adds them all up (prometheus-client's multiprocess mode).
        several = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        if several:
            MultiProcessCollector(self.registry)
        counted_in = None if several else self.registry
        self.bytes_received = Counter(
            "rollscribe_bytes_received", "Upload bytes stored", registry=counted_in
        )
        self.upload_requests = Counter(
            "rollscribe_upload_requests",
            "tus requests by method and status code",
            ["method", "code"],
            registry=counted_in,
        )

    async def handle(self, request: web.Request) -> web.Response:
        now = time.time()
        snapshot = await read_backlog(self.db, now, with_histograms=True)
        outbox = await outbox_stats(self.db, now)
        # No await from here to the render: concurrent scrapes cannot mix their views.
        self.backlog.snapshot, self.backlog.outbox = snapshot, outbox
        # With API keys, a scrape without a key sees no meeting ids, one with a key only its
        # own meetings'; the totals are everyone's. Without keys every meeting is "".
        self.backlog.viewer = request[OWNER]
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def count_uploads(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if not request.path.startswith("/files"):
                return await handler(request)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                self.upload_requests.labels(request.method, str(exc.status)).inc()
                raise
            self.upload_requests.labels(request.method, str(response.status)).inc()
            return response

        return count_uploads
