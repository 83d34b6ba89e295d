"""Open uploads on the target: listed at the start and at the end of a copy, the run's own aborted.

An S3 multipart upload begun and never completed nor aborted is invisible
(no object, nothing in a listing of objects), yet its parts are billed until
a lifecycle rule removes them. pmigrate's workers complete or abort every
upload they begin, unless they cannot: the whole run killed mid-upload, or a
connection cut just after the server created an upload, which the client
retries and completes under a second id, never learning the first.

So a copy lists the open uploads under the target's prefix before its
workers write anything, and again once they have all stopped, and aborts its
own: those whose key is the blob key of one of this source's files with a
blob (status uploaded or removed), the keys this run writes. Any other open
upload under the prefix is counted and named in the report, never touched.

Ownership rests on one run writing to a target at a time, which the run's
lock on the target's journal ensures (pmigrate.lock): at the start no worker
of this run has written yet, and at the end all have stopped, so an open
upload on one of its keys then belongs to no live run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pmigrate.batching import batched
from pmigrate.data.base import OpenUpload
from pmigrate.data.registry import open_backend
from pmigrate.transfer import checks

LOOKUP_CHUNK = 500  # ids per IN (...) query
NAMED = 20  # keys named in the report, per kind


@dataclass
class Sweep:
    found: int = 0
    aborted: list[str] = field(default_factory=list)  # keys of this source's blobs whose upload was aborted
    foreign: list[str] = field(default_factory=list)  # keys that are not this source's blobs: left alone
    failed: list[str] = field(default_factory=list)  # "key: why" for aborts that failed


def sweep(name: str, options: dict[str, Any], source: Any, *, start_method: str) -> Sweep:
    """List the target's open uploads, abort this source's; source is the source metadata's engine."""
    found: list[OpenUpload] = checks.call([name], _list, name, options, start_method=start_method, what="listing the open uploads")
    ids = sorted({u.file_id for u in found if u.file_id})
    ours = own_blobs(source, ids)
    mine = [u for u in found if u.file_id in ours]
    out = Sweep(found=len(found), foreign=[u.key for u in found if u.file_id not in ours])
    failures: list[tuple[str, str]] = []
    if mine:
        failures = checks.call([name], _abort, name, options, mine, start_method=start_method, what="aborting the open uploads")
    failed = {key for key, _ in failures}
    out.aborted = [u.key for u in mine if u.key not in failed]
    out.failed = [f"{key}: {why}" for key, why in failures]
    return out


def own_blobs(source: Any, ids: Sequence[str]) -> set[str]:
    """Those of ids that are files of this source with a blob, compared exactly (mysql compares ids without case)."""
    import sqlalchemy as sa

    from pmigrate.filerows import BLOB_STATUSES, FILES

    out: set[str] = set()
    with source.connect() as conn:
        for part in batched(ids, LOOKUP_CHUNK):
            q = sa.select(FILES.c.id).where(FILES.c.id.in_(part), FILES.c.status.in_(BLOB_STATUSES))
            wanted = set(part)
            out.update(fid for (fid,) in conn.execute(q) if fid in wanted)
    return out


def record(s: Sweep, *, when: str, area: str, report: Any) -> None:
    """The sweep's figures in the report's section, and a line for anything found."""
    report.section(area).setdefault("open_uploads", {})[when] = {
        "found": s.found,
        "aborted": len(s.aborted),
        "not_ours": len(s.foreign),
        "not_ours_keys": s.foreign[:NAMED],
        "abort_failed": len(s.failed),
    }
    if s.aborted:
        report.line(area, f"at the {when}: aborted {len(s.aborted)} open multipart upload(s) of this source's blobs, "
                          f"left by an interrupted upload: {_named(s.aborted)}")  # fmt: skip
    if s.foreign:
        report.line(area, f"at the {when}: {len(s.foreign)} open multipart upload(s) under the target's prefix "
                          f"are not this source's blobs, left in place: {_named(s.foreign)}")  # fmt: skip
    if s.failed:
        report.warn(f"{len(s.failed)} open multipart upload(s) could not be aborted at the {when}: {_named(s.failed)}")


def _named(items: list[str]) -> str:
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return ", ".join(items[:NAMED]) + more


def _list(name: str, options: dict[str, Any]) -> list[OpenUpload]:
    with open_backend(name, options) as backend:
        return backend.open_uploads()


def _abort(name: str, options: dict[str, Any], uploads: list[OpenUpload]) -> list[tuple[str, str]]:
    """Abort each upload; (key, why) for those that failed."""
    from pmigrate import redact

    failures = []
    with open_backend(name, options) as backend:
        for u in uploads:
            try:
                backend.abort_upload(u)
            except Exception as exc:  # noqa: BLE001 - one failure does not stop the others
                failures.append((u.key, redact.redact(f"{type(exc).__name__}: {exc}")[:300]))
    return failures
