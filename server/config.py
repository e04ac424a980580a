"""Server settings: command-line flags, each also settable as ROLLSCRIBE_<NAME>."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from server.event_loop import DEFAULT_EVENT_LOOP, EVENT_LOOPS
from server.key_limit_values import KeyLimits
from server.webhook_targets import IpNetwork, parse_networks
from storage.blob_store import add_blob_store_arguments
from transcribe.worker_config import add_model_arguments


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    database_url: str | None = None
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    workers: int = 1
    # Server processes sharing the port (SO_REUSEPORT); the first also runs the sweeps,
    # webhook deliveries and the worker pool. The flag's 0 means one per core, its default
    # `auto` what `resolve_processes` picks.
    processes: int = 1
    event_loop: str = DEFAULT_EVENT_LOOP
    sibling: bool = False  # one of the extra processes (started by the first)
    worker_threads: int = 0  # 0: the machine's cores shared among the workers
    model: str | None = None  # a name or folder (transcribe/model_catalog.py); None: tiny.en
    device: str = "auto"
    compute_type: str | None = None
    language: str | None = None  # meetings' default; None: auto, or en for an English model
    max_upload_bytes: int = 8 * 1024**3
    upload_expiry_s: float = 24 * 3600.0
    read_timeout_s: float = 30.0
    # A connection must send a whole request head within this of opening (or of its last
    # response); also how long an idle keep-alive connection stays open.
    header_timeout_s: float = 30.0
    min_body_rate: float = 500.0  # bytes/s over 10 s, for upload bodies; 0: none
    lease_s: float = 60.0
    max_attempts: int = 3
    sweep_interval_s: float = 2.0
    missing_grace_s: float = 300.0
    max_missing_chunks: int = 1000
    # A chunk longer than this is rejected: rolling segments are seconds to minutes long,
    # and a worker holds a chunk's decoded audio in memory.
    max_chunk_s: float = 600.0
    max_backlog_s: float = 4 * 3600.0  # seconds of audio waiting; past it new meetings: 503
    abandon_after_s: float = 6 * 3600.0
    webhook_retry_base_s: float = 5.0
    webhook_retry_max_s: float = 3600.0
    webhook_horizon_s: float = 3 * 24 * 3600.0
    # Networks webhooks may reach besides the public internet.
    webhook_allow_networks: tuple[IpNetwork, ...] = ()
    api_keys_file: str | None = None
    # Browser origins allowed to call the API (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    # The URL clients use for this server, when it is not the bound address.
    public_url: str | None = None
    api_keys: str | None = None  # comma-separated; usually from ROLLSCRIBE_API_KEYS
    # Each key's limits unless its line in the keys file says otherwise (0: unlimited).
    key_limits: KeyLimits = KeyLimits()


def _env(name: str, default: str) -> str:
    return os.environ.get(f"ROLLSCRIBE_{name}", default)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    parser.add_argument("--host", default=_env("HOST", d.host))
    parser.add_argument("--port", type=int, default=int(_env("PORT", str(d.port))))
    parser.add_argument("--data-dir", default=_env("DATA_DIR", str(d.data_dir)))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ROLLSCRIBE_DATABASE_URL"),
        help="default: SQLite (WAL) in the data folder",
    )
    add_blob_store_arguments(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", str(d.workers))),
        help="transcription worker processes (0: this node only serves)",
    )
    parser.add_argument(
        "--processes",
        type=_processes,
        default=_env("PROCESSES", "auto"),
        help="server processes serving the port (SO_REUSEPORT; 0: one per core; default "
        f"auto: one per core up to {MAX_AUTO_PROCESSES} on SQLite, 1 on PostgreSQL)",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=_env("EVENT_LOOP", d.event_loop),
        help="the asyncio event loop each server process runs on (default: uvloop)",
    )
    # Internal: how the first process starts the others.
    parser.add_argument("--sibling", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--worker-threads",
        type=_non_negative,
        default=_env("WORKER_THREADS", str(d.worker_threads)),
        help="CPU threads per worker (default 0: the machine's cores shared among the workers)",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--language",
        default=_env("LANGUAGE", "") or None,
        help="the language of meetings that name none: auto (detected once per track) or a "
        "code such as en, de, es; default: auto, or en with an English-only model",
    )
    parser.add_argument(
        "--max-upload-bytes",
        type=int,
        default=int(_env("MAX_UPLOAD_BYTES", str(d.max_upload_bytes))),
    )
    parser.add_argument(
        "--upload-expiry-seconds",
        type=float,
        default=float(_env("UPLOAD_EXPIRY_SECONDS", str(d.upload_expiry_s))),
    )
    parser.add_argument(
        "--read-timeout-seconds",
        type=float,
        default=float(_env("READ_TIMEOUT_SECONDS", str(d.read_timeout_s))),
    )
    parser.add_argument(
        "--header-timeout-seconds",
        type=float,
        default=float(_env("HEADER_TIMEOUT_SECONDS", str(d.header_timeout_s))),
        help="a connection that has not sent a whole request head this long after opening "
        "(or after its last response) is closed",
    )
    parser.add_argument(
        "--min-body-rate",
        type=float,
        default=float(_env("MIN_BODY_RATE", str(d.min_body_rate))),
        help="bytes/s an upload body must average over each 10 s, or it is ended with 408 "
        "(what arrived is kept); 0: no minimum",
    )
    parser.add_argument(
        "--lease-seconds", type=float, default=float(_env("LEASE_SECONDS", str(d.lease_s)))
    )
    parser.add_argument(
        "--max-attempts", type=int, default=int(_env("MAX_ATTEMPTS", str(d.max_attempts)))
    )
    parser.add_argument(
        "--missing-grace-seconds",
        type=float,
        default=float(_env("MISSING_GRACE_SECONDS", str(d.missing_grace_s))),
        help="after finalize, how long a missing chunk is waited for before it becomes a gap",
    )
    parser.add_argument(
        "--max-chunk-seconds",
        type=float,
        default=float(_env("MAX_CHUNK_SECONDS", str(d.max_chunk_s))),
        help="longest chunk accepted; longer ones are rejected (default 600)",
    )
    parser.add_argument(
        "--max-missing-chunks",
        type=int,
        default=int(_env("MAX_MISSING_CHUNKS", str(d.max_missing_chunks))),
        help="how many chunks that have not arrived yet a finalize may name (all tracks)",
    )
    parser.add_argument(
        "--max-backlog-seconds",
        type=float,
        default=float(_env("MAX_BACKLOG_SECONDS", str(d.max_backlog_s))),
        help="seconds of audio waiting for transcription past which new meetings get 503",
    )
    parser.add_argument(
        "--abandon-after-seconds",
        type=float,
        default=float(_env("ABANDON_AFTER_SECONDS", str(d.abandon_after_s))),
        help="a meeting with no chunk after this long is marked abandoned",
    )
    parser.add_argument(
        "--sweep-interval-seconds",
        type=float,
        default=float(_env("SWEEP_INTERVAL_SECONDS", str(d.sweep_interval_s))),
    )
    parser.add_argument(
        "--webhook-retry-base-seconds",
        type=float,
        default=float(_env("WEBHOOK_RETRY_BASE_SECONDS", str(d.webhook_retry_base_s))),
    )
    parser.add_argument(
        "--webhook-retry-max-seconds",
        type=float,
        default=float(_env("WEBHOOK_RETRY_MAX_SECONDS", str(d.webhook_retry_max_s))),
    )
    parser.add_argument(
        "--webhook-horizon-seconds",
        type=float,
        default=float(_env("WEBHOOK_HORIZON_SECONDS", str(d.webhook_horizon_s))),
        help="how long a delivery is retried before it goes to the dead letters",
    )
    parser.add_argument(
        "--webhook-allow-networks",
        default=_env("WEBHOOK_ALLOW_NETWORKS", ""),
        help="comma-separated CIDRs webhooks may be delivered to besides public addresses "
        "(default: none; loopback, private, link-local and metadata addresses are refused)",
    )
    parser.add_argument(
        "--cors-origins",
        default=_env("CORS_ORIGINS", ""),
        help="comma-separated browser origins allowed to call the API, e.g. "
        "https://app.example.com (default: none; '*' allows any origin)",
    )
    parser.add_argument(
        "--public-url",
        default=os.environ.get("ROLLSCRIBE_PUBLIC_URL"),
        help="the URL clients reach this server at, when not the bound address (its host "
        "name is accepted in the Host header)",
    )
    parser.add_argument(
        "--api-keys-file",
        default=os.environ.get("ROLLSCRIBE_API_KEYS_FILE"),
        help="API keys, one per line: sha256:<hash> lines written by `rollscribe keys add`, "
        "or plain tokens; re-read when it changes. Also ROLLSCRIBE_API_KEYS=key1,key2",
    )
    limits = d.key_limits
    parser.add_argument(
        "--max-open-meetings-per-key",
        type=_non_negative,
        default=_env("MAX_OPEN_MEETINGS_PER_KEY", str(limits.max_open_meetings)),
        help="meetings one key may have recording at once; past it 403 (0: unlimited)",
    )
    parser.add_argument(
        "--max-upload-bytes-per-key-per-day",
        type=_non_negative,
        default=_env("MAX_UPLOAD_BYTES_PER_KEY_PER_DAY", str(limits.max_upload_bytes_per_day)),
        help="upload bytes one key may send per UTC day; past it 429 (0: unlimited)",
    )
    parser.add_argument(
        "--max-webhooks-per-key",
        type=_non_negative,
        default=_env("MAX_WEBHOOKS_PER_KEY", str(limits.max_webhooks)),
        help="webhooks one key may register; past it 403 (0: unlimited)",
    )


# `--processes auto`, the default. On SQLite one process per core: on a 2-core machine with
# SQLite, 2 processes served 13-19 % more small uploads than 1, with a lower p99, once they
# queued for SQLite's write lock in the kernel (storage/writer_queue.py; bench/README.md,
# "Many small uploads"). At most 4: SQLite has one writer however many processes ask, and
# each process has its own validation worker, connections and memory (not measured past 2
# cores). On PostgreSQL 1: 2 processes served no more small uploads than 1 there, and each
# process keeps up to 30 connections of the server's `max_connections`.
MAX_AUTO_PROCESSES = 4


def resolve_processes(value: int | None, database_url: str | None) -> int:
    """The number of server processes `--processes` means: None is `auto`, 0 one per core."""
    cores = os.cpu_count() or 1
    if value is None:
        on_sqlite = database_url is None or database_url.startswith("sqlite")
        return min(cores, MAX_AUTO_PROCESSES) if on_sqlite else 1
    return value or cores


def _processes(value: str) -> int | None:
    if value.strip() == "auto":
        return None
    try:
        return _non_negative(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto or a non-negative integer, got {value.strip()!r}"
        ) from None


def _non_negative(value: str) -> int:
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # "²" is a digit to str.isdigit alone
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return int(value)


def _networks(spec: str) -> tuple[IpNetwork, ...]:
    try:
        return parse_networks(spec)
    except ValueError as exc:
        raise SystemExit(f"rollscribe: --webhook-allow-networks: {exc}") from None


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=Path(args.data_dir),
        database_url=args.database_url,
        blob_url=args.blob_url,
        s3_endpoint_url=args.s3_endpoint_url,
        workers=args.workers,
        processes=resolve_processes(args.processes, args.database_url),  # main() resolved it
        sibling=args.sibling,
        event_loop=args.event_loop,
        worker_threads=args.worker_threads,
        model=args.model,
        device=args.device,
        compute_type=args.compute_type,
        language=args.language,
        max_upload_bytes=args.max_upload_bytes,
        upload_expiry_s=args.upload_expiry_seconds,
        read_timeout_s=args.read_timeout_seconds,
        header_timeout_s=args.header_timeout_seconds,
        min_body_rate=args.min_body_rate,
        lease_s=args.lease_seconds,
        max_attempts=args.max_attempts,
        missing_grace_s=args.missing_grace_seconds,
        max_missing_chunks=args.max_missing_chunks,
        max_chunk_s=args.max_chunk_seconds,
        max_backlog_s=args.max_backlog_seconds,
        abandon_after_s=args.abandon_after_seconds,
        sweep_interval_s=args.sweep_interval_seconds,
        webhook_retry_base_s=args.webhook_retry_base_seconds,
        webhook_retry_max_s=args.webhook_retry_max_seconds,
        webhook_horizon_s=args.webhook_horizon_seconds,
        webhook_allow_networks=_networks(args.webhook_allow_networks),
        api_keys_file=args.api_keys_file,
        cors_origins=tuple(
            o.strip().rstrip("/") for o in args.cors_origins.split(",") if o.strip()
        ),
        public_url=args.public_url,
        api_keys=os.environ.get("ROLLSCRIBE_API_KEYS"),
        key_limits=KeyLimits(
            max_open_meetings=args.max_open_meetings_per_key,
            max_upload_bytes_per_day=args.max_upload_bytes_per_key_per_day,
            max_webhooks=args.max_webhooks_per_key,
        ),
    )
