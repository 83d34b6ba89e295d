"""What the blob stage tells at its end: figures for the JSON report and lines for people.

The copy counts as results come in (Figures); the dry run counts in
precheck.survey. Both are written here once the pass is over, so that
the engine holds the run and this module holds what is said of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pmigrate import filerows, ownership
from pmigrate.errors import Kind
from pmigrate.options import RunOptions
from pmigrate.report import Report
from pmigrate.transfer import memory, precheck, stopcause
from pmigrate.words import plural
from pmigrate.words import size as _size

AREA = "data"


@dataclass
class Figures:
    """The copy's counts, named as the report's data section names them."""

    copied: int = 0  # blobs that landed on the target in this run
    bytes: int = 0  # ... and their bytes
    server_side: int = 0  # of the copied, those the store copied itself
    already_done: int = 0  # in the journal and found on the target: skipped
    already_done_bytes: int = 0
    trusted: int = 0  # in the journal from an unchanged source row: skipped without a look (transfer/delta.py)
    trusted_bytes: int = 0
    checked_on_target: int = 0  # listed blobs looked up on the target
    errors: int = 0
    warnings: int = 0  # problems that did not undo a copy (md5-mismatch)
    errors_by_kind: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1


def _skipped(tally: filerows.Tally) -> dict[str, int]:
    return {f"status {s}": n for s, n in tally.skipped_by_status().items()}


def _trust_line(fig: Figures) -> str:
    """How many blobs were taken on the journal's word, how many looked up on the target."""
    parts = []
    if fig.trusted:
        parts.append(f"{fig.trusted} unchanged since the journal listed them, not looked up on the target")
    if fig.checked_on_target:
        parts.append(f"{fig.checked_on_target} looked up on the target")
    return "journal: " + "; ".join(parts) + ("" if fig.checked_on_target else " (--recheck looks every one up)")


def _errors_line(errors: int, by_kind: dict[str, int]) -> str:
    return f"{errors} ({', '.join(f'{n} {k}' for k, n in sorted(by_kind.items()))})"


@dataclass(frozen=True, kw_only=True)
class Run:
    """What the copy was, beside its counts."""

    seconds: float
    workers: int
    deaths: int
    journal: Path
    complete: bool
    halt: stopcause.Halt | None = None
    keys_made: int | None = None  # SSE-C keys pmigrate made (data/ssekeys.py), when it made any
    metadata: bool = True  # the metadata copy runs too (it writes those keys)
    memory: memory.Figures | None = None


def copy_summary(report: Report, fig: Figures, tally: filerows.Tally, run: Run) -> None:
    """The copy's figures into report.section('data'), and its lines."""
    skipped = _skipped(tally)
    done, done_bytes = fig.already_done + fig.trusted, fig.already_done_bytes + fig.trusted_bytes
    if done:
        skipped["already done"] = done
    rate = fig.bytes / run.seconds if run.seconds > 0 else 0.0
    fps = fig.copied / run.seconds if run.seconds > 0 else 0.0
    sec = report.section(AREA)
    sec.update(files=tally.rows, blobs=tally.blobs, **asdict(fig), skipped=skipped, seconds=round(run.seconds, 3),
               bytes_per_second=round(rate), files_per_second=round(fps, 1), workers=run.workers,
               worker_deaths=run.deaths, journal=str(run.journal), complete=run.complete)  # fmt: skip
    sec.update(already_done=done, already_done_bytes=done_bytes)
    line = f"copied {plural(fig.copied, 'blob')}, {_size(fig.bytes)} in {run.seconds:.1f}s ({_size(rate)}/s, {fps:.0f} blobs/s)"
    if fig.server_side:
        line += f"; {fig.server_side} server-side"
    report.line(AREA, line)
    if skipped:
        report.line(AREA, "skipped: " + ", ".join(f"{n} {why}" for why, n in skipped.items()))
    if fig.trusted or fig.checked_on_target:
        report.line(AREA, _trust_line(fig))
    if fig.errors:
        report.line(AREA, f"errors: {_errors_line(fig.errors, fig.errors_by_kind)}")
    if run.keys_made is not None:
        sec["sse_keys_made"] = run.keys_made
        rows = "writes" if run.metadata else "must write (run it: without --data-only, or with --metadata-only)"
        report.line(AREA, f"SSE-C keys made by pmigrate for {run.keys_made} file(s) without one: "
                           f"the metadata copy {rows} the same keys into the target's files rows")  # fmt: skip
    if run.memory is not None:
        sec.update(memory=run.memory.as_json())
        report.line(AREA, run.memory.summary())
        warning = run.memory.warning()
        if warning:
            report.warn(warning)
    if run.halt is not None:
        sec.update(stopped=run.halt.figures)
        report.line(AREA, f"stopped before the end: {run.halt.message}")
    elif not run.complete:
        report.line(AREA, "stopped before the end: run the same command again to resume")


# -- the dry run --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Looked:
    """Where the dry run looked, beside what precheck.survey found."""

    target: str  # where the blobs would go
    exists: bool  # False: the run would create the target store
    owner: str  # pmigrate.ownership state of the target store
    journal: Path
    known: tuple[int, int]  # blobs and bytes the journal lists as done
    room: precheck.Room | None = None


_OWNER_NOTE = {
    ownership.EMPTY: "the target store holds no blob: pmigrate would fill it and record this source as its owner",
    ownership.OWNED: "the target store was filled by pmigrate from this source",
    ownership.FOREIGN: "the target store holds objects pmigrate did not copy (--merge: written into, never deleted from)",
    ownership.OTHER: "the target store was filled by pmigrate from another source (--merge: written into, never deleted from)",
}


def dry_summary(report: Report, tally: filerows.Tally, found: precheck.Survey, looked: Looked, *, opts: RunOptions) -> None:
    """What the run would do, into report.section('data'), and its lines."""
    known = looked.known
    sec = report.section(AREA)
    sec.update(
        dry_run=True,
        target=looked.target,
        target_exists=looked.exists,
        files=tally.rows,
        by_status={k or "(empty)": v for k, v in sorted(tally.by_status.items())},
        blobs=tally.blobs,
        bytes=tally.blob_bytes,
        journal=str(looked.journal),
        journal_done=known[0],
        journal_done_bytes=known[1],
        journal_lost=known[0] - found.present,
        to_copy=found.copy,
        to_copy_bytes=found.copy_bytes,
        would_replace=found.replace,
        would_delete=0,
        errors=found.errors,
        errors_by_kind=found.errors_by_kind,
        seconds=round(found.seconds, 3),
        skipped=_skipped(tally),
        invalid_ids=tally.invalid,
    )
    sec["target_owner"] = looked.owner
    report.line(AREA, f"blobs would go to {looked.target}" + ("" if looked.exists else " (not there yet: the run would create it)"))
    report.line(AREA, _OWNER_NOTE[looked.owner])
    report.line(AREA, f"would copy {plural(found.copy, 'blob')}, {_size(found.copy_bytes)}, of {tally.blobs} ({_size(tally.blob_bytes)}) with a blob")
    if known[0]:
        lost = known[0] - found.present
        again = f"; {lost} no longer there, copied again" if lost else ""
        report.line(AREA, f"journal {looked.journal} lists {known[0]} ({_size(known[1])}) as done: {found.present} on the target, skipped{again}")
    if found.replace:
        report.line(AREA, f"would replace {plural(found.replace, 'blob')} ({_size(found.replace_bytes)}) the target holds under the same name")
    if not opts.prune:
        report.line(AREA, "would delete no blob: without --prune, pmigrate deletes none from a target store")
    if looked.room is not None:
        _dry_room(looked.room, found, opts=opts, report=report)
    if found.errors:
        then = "would go on past them" if opts.ignore_errors else "would stop at the first (--ignore-errors goes on past them)"
        report.line(AREA, f"errors the run would meet: {_errors_line(found.errors, found.errors_by_kind)}; it {then} and end with exit status 1")
    by_status = ", ".join(f"{n} {s or '(empty)'}" for s, n in sorted(tally.by_status.items()))
    report.line(AREA, f"files by status: {by_status or 'none'}")
    report.line(AREA, f"looked at every blob in {found.seconds:.1f}s")


def _dry_room(room: precheck.Room, found: precheck.Survey, *, opts: RunOptions, report: Report) -> None:
    """The free space preflight checked, against what the pass found the run would write."""
    new = found.copy_bytes - found.replace_bytes  # a replaced blob frees its old bytes
    report.section(AREA).update(free_bytes=room.free.bytes, free_inodes=room.free.files, free_at=room.free.path)
    report.line(AREA, f"{_size(room.free.bytes)} free on the filesystem of {room.free.path}; the run would add {_size(new)}")
    short = precheck.Room(free=room.free, blobs=found.copy - found.replace, bytes=new).shortfall()
    if short and opts.space_check:
        # Preflight counted what the journal lists as done; some of it is gone from the target.
        report.problem(area=AREA, kind=Kind.TARGET_FULL, item=room.free.path, message=f"{short}: {precheck.NO_SPACE_HINT}")
    elif short:
        report.warn(f"{short}; --no-space-check: the run would go on until the disk fills")
