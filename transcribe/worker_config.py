"""Worker settings and their command-line flags (light: no model is imported here)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from storage.blob_store import add_blob_store_arguments
from storage.database import sqlite_url
from storage.job_queue import RetryPolicy
from transcribe.engine import DEVICES
from transcribe.model_catalog import BUNDLED, PACKS


@dataclass(frozen=True)
class WorkerSettings:
    database_url: str
    data_dir: Path
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    cpu_threads: int = 0  # 0: every core this process may run on
    model: str | None = None  # a name or folder; None: the bundled tiny.en
    device: str = "auto"
    compute_type: str | None = None  # None: int8 on the CPU, float16 on a GPU
    lease_s: float = 60.0
    poll_s: float = 0.2
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --compute-type: the same for `serve` (its workers) and `worker`."""
    env = os.environ.get
    parser.add_argument(
        "--model",
        "--model-dir",  # the flag's earlier name, when it took a folder only
        dest="model",
        default=env("ROLLSCRIBE_MODEL") or env("ROLLSCRIBE_MODEL_DIR"),
        help=f"a model name ({', '.join([BUNDLED, *PACKS])}; `rollscribe models` lists "
        f"what is installed) or a CTranslate2 Whisper folder; default: the bundled {BUNDLED}",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=env("ROLLSCRIBE_DEVICE", "auto"),
        help="auto: CUDA when CTranslate2 sees a GPU, else the CPU",
    )
    parser.add_argument(
        "--compute-type",
        default=env("ROLLSCRIBE_COMPUTE_TYPE"),
        help="CTranslate2's (int8, int8_float16, float16, float32...); default: int8 on the "
        "CPU, float16 on a GPU",
    )


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
        default=int(env("ROLLSCRIBE_WORKER_THREADS", "0")),
        help="CPU threads for CTranslate2 (default 0: the cores this process may use)",
    )
    add_model_arguments(parser)
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
        model=args.model,
        device=args.device,
        compute_type=args.compute_type,
        lease_s=args.lease_seconds,
        retry=RetryPolicy(max_attempts=args.max_attempts),
    )
