"""One boto3 session per process, with boto3's S3 model already loaded.

The fork server imports this module before it forks the workers, so each
worker builds its client from a loaded session (~15 ms) and shares those
pages, instead of loading the S3 model itself (~0.4 s of CPU per process).
A session holds no thread and no connection, so a fork copies it safely.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3

_lock = threading.Lock()
_session = boto3.session.Session()
# A throwaway client: loading the model, endpoint rules and partitions is what costs; no request is sent.
_session.client("s3", region_name="us-east-1", aws_access_key_id="-", aws_secret_access_key="-")


def client(**kwargs: Any) -> Any:
    """An S3 client from this process's session (sessions are not safe to share between threads)."""
    with _lock:
        return _session.client("s3", **kwargs)
