"""Which blob store a test's servers and workers use: their data folder by default; an
S3-compatible object store when ROLLSCRIBE_TEST_BLOBS=s3 (`.ci/run` does so for the
PostgreSQL run). The store is then a moto server, started once per test session, or the
endpoint in ROLLSCRIBE_TEST_S3_ENDPOINT; each data folder gets its own key prefix, as it
gets its own database."""

from __future__ import annotations

import atexit
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import requests

ON_S3 = os.environ.get("ROLLSCRIBE_TEST_BLOBS") == "s3"
BUCKET = "rollscribe-test"

_endpoint: str | None = os.environ.get("ROLLSCRIBE_TEST_S3_ENDPOINT")
_bucket_made = False


def on_s3() -> bool:
    return ON_S3


def _start_moto() -> str:
    from tests.server_process import free_port

    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(moto.kill)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return url
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError("moto_server did not start")


def _test_credentials() -> None:
    # Inherited by the servers and workers the tests start.
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)


if ON_S3:
    _test_credentials()


def s3_client():  # type: ignore[no-untyped-def]
    """A boto3 client on the test store (started on first use, even when the run's servers
    use folders: the S3 store's own tests need it either way)."""
    global _endpoint, _bucket_made
    _test_credentials()
    if _endpoint is None:
        _endpoint = _start_moto()
    client = boto3.client("s3", endpoint_url=_endpoint)
    if not _bucket_made:
        try:
            client.create_bucket(Bucket=BUCKET)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        _bucket_made = True
    return client


def s3_endpoint() -> str:
    s3_client()
    assert _endpoint is not None
    return _endpoint


def prefix_for(data_dir: Path) -> str:
    return "t" + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]


def blob_args(data_dir: Path) -> list[str]:
    """`--blob-url ...` for a server or worker process; none for the data folder."""
    if not ON_S3:
        return []
    return [
        "--blob-url",
        f"s3://{BUCKET}/{prefix_for(data_dir)}",
        "--s3-endpoint-url",
        s3_endpoint(),
    ]


def _upload_key(data_dir: Path, upload_id: str) -> str:
    return f"{prefix_for(data_dir)}/uploads/{upload_id}"


def stored_bytes(data_dir: Path, upload_id: str) -> int | None:
    """How many bytes the store holds for an upload (None: nothing at all)."""
    if not ON_S3:
        path = data_dir / "uploads" / upload_id
        return path.stat().st_size if path.exists() else None
    key = _upload_key(data_dir, upload_id)
    listing = s3_client().list_objects_v2(Bucket=BUCKET, Prefix=key)
    sizes = [o["Size"] for o in listing.get("Contents", []) if not o["Key"].endswith("multipart")]
    return sum(sizes) if listing.get("Contents") else None


def take_blob(data_dir: Path, upload_id: str) -> bytes:
    """Remove a finished upload's bytes from the store (a lost disk, a deleted object)."""
    if not ON_S3:
        path = data_dir / "uploads" / upload_id
        content = path.read_bytes()
        path.unlink()
        return content
    key = _upload_key(data_dir, upload_id)
    content = s3_client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3_client().delete_object(Bucket=BUCKET, Key=key)
    return bytes(content)


def put_blob(data_dir: Path, upload_id: str, content: bytes) -> None:
    if not ON_S3:
        (data_dir / "uploads" / upload_id).write_bytes(content)
        return
    s3_client().put_object(Bucket=BUCKET, Key=_upload_key(data_dir, upload_id), Body=content)


def received_bytes(data_dir: Path, url: str) -> bytes | None:
    """What an upload holds, finished or not. A folder store answers GET for any upload. S3
    cannot read an unfinished multipart upload, so the server refuses GET until the end (as
    tusd's s3store does); below the first part (5 MiB), the acknowledged bytes are in the
    upload's `.part.0` object, read here. None: not readable before the upload finishes."""
    tus = {"Tus-Resumable": "1.0.0"}
    got = requests.get(url, headers=tus, timeout=30)
    if got.status_code == 200:
        return got.content
    assert ON_S3 and got.json()["error"]["code"] == "ERR_INCOMPLETE_UPLOAD", got.text
    offset = int(requests.head(url, headers=tus, timeout=10).headers["Upload-Offset"])
    if offset == 0:
        return b""
    if offset >= 5 * 1024 * 1024:
        return None
    key = _upload_key(data_dir, url.rsplit("/", 1)[1]) + ".part.0"
    body = s3_client().get_object(Bucket=BUCKET, Key=key, Range=f"bytes=0-{offset - 1}")
    return bytes(body["Body"].read())


def carries(data_dir: Path) -> list[str]:
    """The carry objects the store holds."""
    if not ON_S3:
        folder = data_dir / "carry"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    listing = s3_client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix_for(data_dir)}/carry/")
    return sorted(o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", []))
