"""Run options shared by every stage, passed by keyword, never by position."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmigrate.data.retry import RETRY_FOR


def default_workers() -> int:
    return os.cpu_count() or 2


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    metadata: bool = True  # False with --data-only
    data: bool = True  # False with --metadata-only
    workers: int = default_workers()
    batch_size: int = 5000
    max_memory: int | None = None  # bytes for the whole run; None: 2 parts a worker beside the processes; 0: no limit
    dry_run: bool = False
    ignore_errors: bool = False
    verify: bool = False
    checksum: str = "xxh3"  # xxh3 | md5 (md5 also checks files.md5)
    journal: Path | None = None  # None: the default tied to the target
    restart: bool = False
    recheck: bool = False  # look every journaled blob up on the target, even one whose source row is unchanged
    repeat_until_delta: int | None = None  # run passes until one copies fewer blobs than this (pmigrate.cutover)
    merge: bool = False  # accept a target this source did not fill: insert and update, never delete
    prune: bool = False  # delete from the target what is gone from the source (only in one it filled)
    with_sessions: bool = False
    lock_timeout: int = 60  # seconds a metadata statement waits for another session's lock before giving up
    follow_outside_symlinks: bool = False  # file source: read blobs whose symlinks lead out of Directory
    space_check: bool = True  # False with --no-space-check: copy even when the target's free space looks short
    retry_for: float = RETRY_FOR  # S3: seconds a request is tried again while the store answers nothing
    quiet: bool = False
    stats: float = 10.0  # seconds between progress lines when stderr is not a terminal; 0: none
    verbose: bool = False
    cluster: str | None = None  # --cluster: a Dask scheduler's address, or local:N; None: this host's worker processes
    bwlimit: Any = None  # --bwlimit: a transfer.bwlimit.Timetable of bytes/s read from the source; None: no limit
    tpslimit: float = 0.0  # --tpslimit: requests per second to object stores, for the whole pool; 0: no limit
