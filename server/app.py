"""Wires the server: database, blob store, tus handler, meetings API, events, worker pool."""

from __future__ import annotations

import logging

from aiohttp import web

from codec.validation_pool import ValidationPool
from server.admission import Admission
from server.auth import ApiKeys, auth_middleware
from server.config import ServerConfig
from server.cors import cors_middleware
from server.docs_api import DocsApi
from server.errors import error_middleware
from server.events_api import EventsApi
from server.heap_trim import HeapTrimmer
from server.host_check import allowed_names, host_check_middleware
from server.json_body import BODY_TIMEOUT_S
from server.key_limits import UploadQuota
from server.key_ring import KeyRing
from server.meeting_languages import LanguagePolicy
from server.meetings_api import MeetingsApi
from server.metrics import Metrics
from server.path_params import path_params_middleware
from server.recovery import RecoverySweeper
from server.tus.handler import TusHandler, TusSettings
from server.web_pages import WebPages
from server.webhook_dispatcher import DeliveryPolicy, WebhookDispatcher
from server.webhook_targets import TargetPolicy
from server.webhooks_api import WebhooksApi
from storage.blob_store import blob_store_for
from storage.chunk_intake import ChunkIntake
from storage.database import Database, sqlite_url
from storage.event_feed import EventFeed
from storage.job_queue import RetryPolicy
from storage.meeting_store import MeetingStore
from storage.schema import ensure_schema
from storage.upload_locks import upload_locks_for
from storage.upload_store import UploadStore
from transcribe.engine import usable_cores
from transcribe.model_catalog import resolve as resolve_model
from transcribe.pool import WorkerPool

log = logging.getLogger("rollscribe")

DB_KEY = web.AppKey("db", Database)
POOL_KEY = web.AppKey("pool", WorkerPool)


def worker_args(config: ServerConfig, database_url: str) -> list[str]:
    args = [
        "--database-url",
        database_url,
        "--data-dir",
        str(config.data_dir),
        "--threads",
        str(config.worker_threads or max(1, usable_cores() // max(1, config.workers))),
        "--device",
        config.device,
        "--lease-seconds",
        str(config.lease_s),
        "--max-attempts",
        str(config.max_attempts),
    ]
    if config.model:
        args += ["--model", config.model]
    if config.compute_type:
        args += ["--compute-type", config.compute_type]
    if config.blob_url:
        args += ["--blob-url", config.blob_url]
    if config.s3_endpoint_url:
        args += ["--s3-endpoint-url", config.s3_endpoint_url]
    return args


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(config: ServerConfig, keys: KeyRing | ApiKeys | None = None) -> web.Application:
    # First: a model or language that cannot be used stops the server before anything starts.
    languages = LanguagePolicy.for_model(resolve_model(config.model), config.language)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    database_url = config.database_url or sqlite_url(config.data_dir)
    db = Database(database_url)
    blobs = blob_store_for(config.data_dir, config.blob_url, config.s3_endpoint_url)
    validation = ValidationPool()
    intake = ChunkIntake(db, blobs, validation, max_chunk_s=config.max_chunk_s)
    uploads = UploadStore(db, blobs, intake)
    locks = upload_locks_for(db, config.data_dir)
    pool = WorkerPool(config.workers, worker_args(config, database_url))
    metrics = Metrics(db, lambda: config.workers)
    admission = Admission(
        db,
        config.max_backlog_s,
        workers=lambda: config.workers,
        ready_workers=lambda: pool.ready_count(config.data_dir / "workers"),
        blobs=blobs,
    )
    tus = TusHandler(
        uploads,
        blobs,
        TusSettings(
            max_size=config.max_upload_bytes,
            expiry_s=config.upload_expiry_s,
            read_timeout_s=config.read_timeout_s,
            min_body_rate=config.min_body_rate,
        ),
        locks,
        on_bytes=metrics.bytes_received.inc,
        quota=UploadQuota(db),
    )
    retry = RetryPolicy(max_attempts=config.max_attempts)
    sweeper = RecoverySweeper(
        db,
        intake,
        uploads,
        retry,
        interval_s=config.sweep_interval_s,
        missing_grace_s=config.missing_grace_s,
        abandon_after_s=config.abandon_after_s,
        upload_expiry_s=config.upload_expiry_s,
    )
    ring = (
        keys
        if isinstance(keys, KeyRing)
        else KeyRing.fixed(keys or ApiKeys(), defaults=config.key_limits)
    )
    # Without keys, the Host header must name this server (DNS rebinding: host_check).
    host_check = (
        [] if ring.keyed else [host_check_middleware(allowed_names(config.host, config.public_url))]
    )
    app = web.Application(
        middlewares=[
            cors_middleware(config.cors_origins),
            metrics.middleware(),
            error_middleware,
            *host_check,
            auth_middleware(ring),
            path_params_middleware,
        ],
        client_max_size=1024**2,
    )
    app[DB_KEY] = db
    app[BODY_TIMEOUT_S] = config.read_timeout_s
    app[POOL_KEY] = pool
    app.add_routes(tus.routes())
    meetings = MeetingsApi(
        MeetingStore(db, blobs),
        admission,
        languages=languages,
        workers=config.workers,
        max_missing_chunks=config.max_missing_chunks,
    )
    app.add_routes(meetings.routes())
    feed = EventFeed(db)
    events = EventsApi(feed, meetings.progress, ring.owner_active)
    app.add_routes(events.routes())
    targets = TargetPolicy(config.webhook_allow_networks)
    app.add_routes(WebhooksApi(db, targets).routes())
    dispatcher = WebhookDispatcher(
        db,
        DeliveryPolicy(
            backoff_base_s=config.webhook_retry_base_s,
            backoff_max_s=config.webhook_retry_max_s,
            horizon_s=config.webhook_horizon_s,
        ),
        targets,
        wait_for_events=feed.wait_for_commit,
    )
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", admission.readyz),
            web.get("/metrics", metrics.handle),
        ]
    )
    app.add_routes(DocsApi(ring.keyed).routes())
    app.add_routes(WebPages().routes())

    trimmer = HeapTrimmer()

    async def lifecycle(_app: web.Application):  # type: ignore[no-untyped-def]
        await ensure_schema(db)  # SchemaMismatch stops the start: `rollscribe db upgrade`
        await blobs.start()  # BlobStoreError stops the start: a bad bucket or endpoint
        await validation.start()
        # Recovery first, so that a restart moves everything on before new work arrives.
        # The other processes of a `--processes` server only serve HTTP.
        if not config.sibling:
            await sweeper.sweep()
            sweeper.start()
            dispatcher.start()
        ring.start()
        trimmer.start()
        await feed.start()
        events.start()
        await pool.start()
        yield
        await events.stop()
        await feed.stop()
        await ring.stop()
        await trimmer.stop()
        await dispatcher.stop()
        await sweeper.stop()
        await pool.stop()
        await locks.close()
        await validation.close()
        await blobs.close()
        await db.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(events.end_streams)
    return app
