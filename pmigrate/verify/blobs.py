"""Blob audit: every blob the source metadata says exists, read and hashed from the target.

The parent streams the source `files` rows as the copy reads them
(pmigrate.filerows: uploaded and removed, the only statuses with a blob) as jobs into the blob engine's pool (transfer/pool.py:
bounded, worker death detected, jobs handed out again); each worker builds its
own backends and runs blobjob.verify_blob on each job; only the parent writes
the report. Memory stays flat: the parent holds at most the chunks in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from pmigrate import filerows
from pmigrate.batching import batched
from pmigrate.errors import Kind
from pmigrate.verify import blobjob

AREA = "verify-blobs"
KINDS = (
    blobjob.OK,
    blobjob.MISSING,
    blobjob.SIZE,
    blobjob.HASH,
    blobjob.CORRUPT_SOURCE,
    blobjob.SOURCE_MISSING,
    blobjob.ERROR,
)

# Outcomes that a fresh copy of the blob repairs.
TARGET_WRONG = frozenset({blobjob.MISSING, blobjob.SIZE, blobjob.HASH})

ExpectedHashes = Callable[[list[str]], Mapping[str, str]]


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """What a worker needs to build a backend: plain, picklable."""

    name: str
    options: dict[str, Any]


@dataclass(kw_only=True)
class BlobTotals:
    files: int = 0
    bytes: int = 0
    bytes_read: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    unverifiable: int = 0
    by_etag: int = 0
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "bytes_read": self.bytes_read,
            **{k: v for k, v in self.counts.items()},
            "unverifiable_by_md5": self.unverifiable,
            "verified_by_etag": self.by_etag,
            "seconds": round(self.seconds, 3),
            "read_mb_per_s": round(self.bytes_read / self.seconds / 1e6, 1) if self.seconds > 0 else None,
        }


# -- the audit ---------------------------------------------------------------


def _jobs(
    engine: Engine, *, md5: bool, expected: ExpectedHashes | None, batch_size: int, invalid: list, keyring: Any = None
) -> Iterator[blobjob.VerifyJob]:
    """One verify job per blob, streamed: the pool pulls them only as fast as workers finish."""
    seq = 0
    for batch in filerows.scan(engine, batch_size=batch_size, ordered=True):
        invalid.extend(batch.invalid)
        for refs in batched(batch.refs, 128):
            if keyring is not None:
                refs = [keyring.ref(r) for r in refs]
            hashes = expected([r.file_id for r in refs]) if expected is not None else {}
            for ref in refs:
                yield blobjob.VerifyJob(seq=seq, ref=ref, expected_xxh3=hashes.get(ref.file_id, ""), md5=md5)
                seq += 1


def audit(
    *,
    engine: Engine,
    src: BackendSpec,
    dst: BackendSpec,
    report: Any,
    workers: int,
    md5: bool,
    expected: ExpectedHashes | None = None,
    batch_size: int = 5000,
    quiet: bool = True,
    stats: float = 0.0,
    on_target_wrong: Callable[[list[str]], None] | None = None,
    keyring: Any = None,
    cluster: str | None = None,
) -> BlobTotals:
    """Verify every blob of the source's uploaded and removed files on the target.

    Runs in the blob engine's worker pool, with verify's own handler
    (blobjob.VerifyHandler) in each worker. ``on_target_wrong`` hears the ids
    of blobs missing or wrong on the target, batch by batch. ``keyring``
    (pmigrate.data.ssekeys) gives files without an SSE-C key the one the copy
    made, to read the target with. ``cluster``: on a Dask cluster's workers
    instead (transfer/cluster.py).
    """
    from pmigrate import progress
    from pmigrate.transfer.handler import Stores
    from pmigrate.transfer.pool import Pool, Workers

    t = BlobTotals()
    t.files, t.bytes = filerows.totals(engine)
    invalid: list[tuple[str, str]] = []
    context = Stores(src_backend=src.name, src_options=dict(src.options), dst_backend=dst.name, dst_options=dict(dst.options))
    # fork: workers start in milliseconds (forkserver costs a second per run), and
    # nothing of the parent's is used in them: they build their own backends.
    # Chunks smaller than the copy's: a verify reads at page-cache speed, so a
    # 32 MiB chunk left to one worker at the end would idle the others.
    chunks = {"chunk_jobs": 64, "chunk_bytes": 16 << 20}
    if cluster:  # on a Dask cluster's workers instead (transfer/cluster.py)
        from pmigrate.transfer.cluster import ClusterPool

        pool: Workers = ClusterPool(address=cluster, factory=blobjob.make_handler, context=context, lost=blobjob.lost)
    else:
        pool = Pool(factory=blobjob.make_handler, context=context, workers=workers, lost=blobjob.lost, start_method="fork", **chunks)
    start = time.perf_counter()
    with progress.bar(quiet=quiet, every=stats, desc="verify blobs", label=AREA, total=t.bytes, unit=progress.BYTES) as bar:
        heard = progress.Bars(progress.NullBar(), bar)  # bytes read, as the copy's bars count bytes copied

        def on_results(results: list[blobjob.VerifyResult]) -> None:
            for res in results:
                _record(res, t, report)
                heard.on_progress(res.target_bytes)
                heard.on_done(ok=res.ok)
            if on_target_wrong is not None:
                wrong = [r.file_id for r in results if r.problems and r.problems[0][0] in TARGET_WRONG]
                if wrong:
                    on_target_wrong(wrong)

        try:
            jobs = _jobs(engine, md5=md5, expected=expected, batch_size=batch_size, invalid=invalid, keyring=keyring)
            pool.run(jobs, on_results=on_results, on_tick=bar.tick)
        finally:
            t.seconds = time.perf_counter() - start
    for line in pool.deaths:
        report.warn(line)
    for fid, why in invalid:
        t.counts[blobjob.ERROR] += 1
        report.problem(area=AREA, kind=Kind.INVALID_ID, item=fid, message=why)
    return t


def _record(res: blobjob.VerifyResult, t: BlobTotals, report: Any) -> None:
    t.bytes_read += res.bytes_read
    if res.by_etag:
        t.by_etag += 1
    if res.unverifiable:
        t.unverifiable += 1
        report.problem(area=AREA, kind=blobjob.UNVERIFIABLE, item=res.file_id, message="files.md5 is empty: not verifiable by md5", fatal=False)
    if res.ok:
        t.counts[blobjob.OK] += 1
        return
    for i, (kind, message) in enumerate(res.problems):
        if i == 0:
            t.counts[kind if kind in t.counts else blobjob.ERROR] += 1
        elif kind == blobjob.CORRUPT_SOURCE:
            t.counts[kind] += 1  # also a copy error: both are counted
        report.problem(area=AREA, kind=kind, item=res.file_id, message=message)
