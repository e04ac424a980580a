"""Worker settings and their command-line flags (light: no model is imported here)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from storage.blob_store import add_blob_store_arguments
from storage.database import sqlite_url
from storage.job_queue import RetryPolicy


@dataclass(frozen=True)
class WorkerSettings:
    database_url: str
    data_dir: Path
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    cpu_threads: int = 2
    model_dir: str | None = None
    lease_s: float = 60.0
    poll_s: float = 0.2
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--database-url",
        default=env("ROLLSCRIBE_DATABASE_URL"),
        help="default: SQLite in the data folder",
    )
    parser.add_argument("--data-dir", default=env("ROLLSCRIBE_DATA_DIR", "./data"))
    add_blob_store_arguments(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=int(env("ROLLSCRIBE_WORKER_THREADS", "2")),
        help="CPU threads per worker for CTranslate2",
    )
    parser.add_argument("--model-dir", default=env("ROLLSCRIBE_MODEL_DIR"))
    parser.add_argument(
        "--lease-seconds", type=float, default=float(env("ROLLSCRIBE_LEASE_SECONDS", "60"))
    )
    parser.add_argument(
        "--max-attempts", type=int, default=int(env("ROLLSCRIBE_MAX_ATTEMPTS", "3"))
    )


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return WorkerSettings(
        database_url=args.database_url or sqlite_url(data_dir),
        data_dir=data_dir,
        blob_url=args.blob_url,
        s3_endpoint_url=args.s3_endpoint_url,
        cpu_threads=args.threads,
        model_dir=args.model_dir,
        lease_s=args.lease_seconds,
        retry=RetryPolicy(max_attempts=args.max_attempts),
    )
