"""The metadata stage: every row of a Plik database into another one, in foreign-key order.

preflight() (plan.py, with the refusals of prechecks.py) reads and checks
everything (levels, the target's state, values that would not fit) and
writes nothing. run() reads the whole source inside one read transaction,
streams each table in batches through row converters (convert.py) into the
drivers' bulk writers (dialects/), all in one target transaction (load.py),
then proves the result with per-table counts.

Rows go across as they are, with one exception: files going to an SSE-C
target from a source without keys get the SSE-C key the blob stage encrypts
them with, in backend_details (pmigrate.data.ssekeys).

A fresh target gets Plik's schema at the source's level and a plain bulk
load; a target already at that level that pmigrate filled from this source
(pmigrate.ownership) is merged by primary key (rows inserted, changed rows
updated), so a second pass during a cutover moves only what changed. Rows gone
from the source are deleted there only with --prune; a target holding
someone else's deployment is refused, or with --merge merged without deleting.
"""

from __future__ import annotations

import contextlib
import time

from pmigrate import ownership
from pmigrate.data import ssekeys
from pmigrate.errors import PmigrateError
from pmigrate.metadata import compare, dialects, faults
from pmigrate.metadata import delta as mdelta
from pmigrate.metadata import values as V
from pmigrate.metadata.load import TableResult, load, orphans
from pmigrate.metadata.plan import AREA, Column, Plan, TablePlan, preflight
from pmigrate.options import RunOptions
from pmigrate.quote import shown
from pmigrate.report import Report
from pmigrate.words import plural

__all__ = ["Column", "Plan", "TablePlan", "preflight", "run"]


def run(plan: Plan, *, opts: RunOptions, report: Report) -> None:
    """Copy every row (or, with --dry-run, count them and say what would happen)."""
    started = time.monotonic()
    sec = report.section(AREA)
    sec.update(source=plan.src_desc, target=plan.dst_desc, level=plan.level, target_state=plan.state)
    for side, driver, zone in (("source", plan.src_driver, plan.src_zone), ("target", plan.dst_driver, plan.dst_zone)):
        if driver == "mysql":
            # datetime(3) has no zone: the DSN's loc says which one, and it must be plikd's.
            sec[f"{side}_time_zone"] = V.zone_name(zone)
            report.line(AREA, f"{side} mysql datetimes read as {V.zone_name(zone)} (the DSN's loc; Local is this machine's TZ)")
    for name in plan.unknown:
        report.warn(f"table {shown(name)} is not Plik's: copied as it is, after Plik's tables")
    results = {t.name: TableResult() for t in plan.tables}
    reader = None
    loaded = False
    try:
        reader = dialects.SnapshotReader(plan.src_engine, plan.src_driver)
        reader.begin()
        skipped_counts = {name: reader.count(name) for name in plan.skipped_tables}
        for t in plan.tables:
            res = results[t.name]
            res.source = reader.count(t.name)
            for item, message in orphans(reader, t):
                res.orphans += 1
                report.problem(area=AREA, kind="orphan", item=item, message=message, fatal=False)
        if opts.dry_run:
            _dry_report(plan, results, skipped_counts, opts=opts, report=report)
            return
        keyring = _keyring(plan)
        if plan.state != "empty":  # which rows differ on the target: only those are written
            plan.changes = mdelta.plan_changes(plan, batch_size=opts.batch_size, fixes={"files": keyring.row_fixer} if keyring else None)
        load(plan, reader, results, opts=opts, report=report, keyring=keyring)
        if keyring is not None:
            sec["sse_keys_made"] = keyring.made
            report.line(AREA, f"SSE-C keys made by pmigrate for {keyring.made} file(s) without one, in backend_details "
                              "(the blob copy encrypts with the same keys)")  # fmt: skip
        loaded = True
        reader.close()
        _prove(plan, results, skipped_counts, started=started, report=report)
    except BaseException as exc:
        fault = exc if isinstance(exc, faults.DatabaseFault) else None
        if fault is None and not isinstance(exc, PmigrateError):  # load names its own failures
            state = (
                "The target holds this run's complete copy, its counts not compared: run pmigrate verify."
                if loaded
                else "Nothing was written on the target."
            )
            fault = plan.watches.fault(exc, state=state, raws={"source": reader and reader.conn})
        if fault is None:
            raise
        report.problem(area=AREA, kind=fault.kind, item=fault.item, message=str(fault))
        if fault is exc:
            raise
        raise fault from exc
    finally:
        plan.watches.stop()
        for text in plan.watches.warnings:
            report.warn(text)
        if reader is not None:
            with contextlib.suppress(Exception):  # a source gone away: the error above says so
                reader.close()
        plan.src_engine.dispose()
        plan.dst_engine.dispose()


_OWNER_NOTE = {
    ownership.EMPTY: "the target holds no deployment: pmigrate would fill it and record this source as its own",
    ownership.OWNED: "the target was filled by pmigrate from this source",
    ownership.FOREIGN: "the target holds a deployment pmigrate did not fill (--merge: inserted into, never deleted from)",
    ownership.OTHER: "the target was filled by pmigrate from another source (--merge: inserted into, never deleted from)",
}


def _keyring(plan: Plan) -> ssekeys.Keyring | None:
    """The keyring of the SSE-C keys this copy writes, its secret durable in the journal first; None if none."""
    if plan.keys_journal is None:
        return None
    from pmigrate.journal import Journal

    path, identity = plan.keys_journal
    journal = Journal.open(path, identity=identity)
    try:
        return ssekeys.keyring(journal, create=True)
    finally:
        journal.close()


def _dry_report(plan: Plan, results: dict[str, TableResult], skipped_counts: dict[str, int], *, opts: RunOptions, report: Report) -> None:
    sec = report.section(AREA)
    where = plan.dst_desc + (f" (schema {plan.dst_schema})" if plan.dst_schema else "")
    if plan.state == "empty":
        what = f"would create Plik's schema at level {plan.level} on {where} and load every row"
    else:
        what = f"would merge by primary key into {where}, already at level {plan.level}"
    report.line(AREA, f"dry run: {what}; nothing written")
    report.line(AREA, _OWNER_NOTE[plan.owner.state])
    if plan.leftovers:
        report.line(AREA, f"would drop {len(plan.leftovers)} staging table(s) a stopped run left: {', '.join(plan.leftovers[:4])}")
    prune = opts.prune and plan.owner.owned
    diff = _dry_diff(plan, opts=opts) if plan.state != "empty" else {}
    tables = {}
    if diff:
        report.line(AREA, f"{'table':<22} {'source':>10} {'insert':>10} {'update':>10} {'delete' if prune else 'keep':>10}")
    for t in plan.tables:
        r = results[t.name]
        entry = {"source": r.source, "orphans": r.orphans, "would_copy": r.source - r.orphans}
        note = f" ({plural(r.orphans, 'orphan')} would be skipped)" if r.orphans else ""
        if t.name in diff:
            ins, upd, gone = diff[t.name]
            entry.update(would_insert=ins, would_update=upd, **{"would_delete" if prune else "would_keep": gone})
            report.line(AREA, f"{t.name:<22} {r.source:>10} {ins:>10} {upd:>10} {gone:>10}{note}")
        else:
            report.line(AREA, f"{t.name:<22} {plural(r.source, 'row', width=10)}{note}")
        tables[t.name] = entry
    if diff and not prune and any(gone for _, _, gone in diff.values()):
        report.line(AREA, "rows gone from the source would be kept; --prune deletes them (only in a target filled from this source)")
    for name, n in skipped_counts.items():
        report.line(AREA, f"{name:<22} {plural(n, 'row', width=10)} skipped (short-lived; --with-sessions copies them)")
    for skip in (s for skips in plan.collisions.values() for s in skips.values()):
        report.line(AREA, f"would skip: {skip.item}: {skip.message}")
    for line in plan.oversized:
        report.line(AREA, f"would skip: {line}")
    sec.update(
        dry_run=True, tables=tables, skipped_tables=skipped_counts, unknown_tables=plan.unknown, target_owner=plan.owner.state
    )


def _dry_diff(plan: Plan, *, opts: RunOptions) -> dict[str, tuple[int, int, int]]:
    """(insert, update, delete) per table on a target that holds rows: the row audit's missing, changed, extra."""
    src = compare.Side(engine=plan.src_engine, driver=plan.src_driver, zone=plan.src_zone)
    dst = compare.Side(engine=plan.dst_engine, driver=plan.dst_driver, zone=plan.dst_zone)
    plans, _problems = compare.plan_tables(src, dst)
    wanted = {t.name for t in plan.tables}
    out = {}
    for tp in plans:
        if tp.name in wanted:
            res = compare.audit_table(tp, src, dst, batch_size=opts.batch_size)
            out[tp.name] = (res.missing, res.changed, res.extra)
    return out


def _prove(plan: Plan, results: dict[str, TableResult], skipped_counts: dict[str, int], *, started: float, report: Report) -> None:
    """Per-table counts, source against target; any difference fails the run."""
    writer = dialects.TargetWriter.from_engine(plan.dst_engine, plan.dst_driver)
    try:
        for t in plan.tables:
            results[t.name].target = writer.count(t.name)
    finally:
        writer.rollback()
        writer.close()
    seconds = time.monotonic() - started
    total = sum(r.source for r in results.values())
    sec = report.section(AREA)
    tables = {}
    mismatches = []
    report.line(AREA, f"{'table':<22} {'source':>10} {'target':>10}")
    for t in plan.tables:
        r = results[t.name]
        expected = r.source - r.orphans - r.bad + r.kept
        ok = r.target == expected
        entry = {"source": r.source, "target": r.target, "orphans": r.orphans, "skipped": r.bad, "ok": ok}
        notes = []
        if r.orphans:
            notes.append(f"{plural(r.orphans, 'orphan')} skipped")
        if r.bad:
            notes.append(f"{plural(r.bad, 'bad row')} skipped")
        ch = plan.changes.get(t.name)
        if ch is not None:
            entry.update(ch.figures(written=r.source - r.orphans - r.bad, source=r.source - r.orphans))
            entry["changed"] = entry["inserted"] + entry["updated"]
            notes.append(f"{entry['inserted']} inserted, {entry['updated']} updated, {entry['unchanged']} unchanged")
        elif r.changed is not None:
            entry["changed"] = r.changed
            notes.append(f"{r.changed} inserted or updated")
        if r.deleted:
            entry["deleted"] = r.deleted
            notes.append(f"{r.deleted} deleted")
        if r.kept:
            entry["kept"] = r.kept
            notes.append(f"{r.kept} gone from the source kept; --prune deletes them")
        if not ok:
            mismatches.append(t.name)
            notes.append(f"MISMATCH: expected {expected}")
        tables[t.name] = entry
        report.line(AREA, f"{t.name:<22} {r.source:>10} {r.target:>10}" + (f"  ({'; '.join(notes)})" if notes else ""))
    for name, n in skipped_counts.items():
        report.line(AREA, f"{name:<22} {n:>10} {'-':>10}  (skipped: short-lived; --with-sessions copies them)")
    sec.update(
        tables=tables,
        skipped_tables=skipped_counts,
        unknown_tables=plan.unknown,
        rows=total,
        seconds=round(seconds, 3),
        rows_per_second=round(total / seconds) if seconds > 0 else None,
        ok=not mismatches,
    )
    mode = "created at level " + plan.level if plan.state == "empty" else "merged by primary key"
    sec["target_owner"] = plan.owner.state
    report.line(AREA, f"{plural(total, 'row')} in {seconds:.1f}s ({total / max(seconds, 1e-9):,.0f} rows/s); target {mode}")
    if mismatches:
        report.line(AREA, f"counts differ for {', '.join(mismatches)}")
        report.fail()
