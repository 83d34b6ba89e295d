"""Loading the target: schema, then every table's rows, in foreign-key order and one transaction.

Rows stream from the source's read transaction through the per-table row
converters (convert.py) into the drivers' bulk writers (dialects/). A fresh
mysql target is loaded under staging names, published at the end at once
(staging.py). On failure the target is rolled back and looked at, and the
error says what it holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from pmigrate import ownership
from pmigrate.batching import batched
from pmigrate.data import ssekeys
from pmigrate.errors import FatalError, ItemError
from pmigrate.metadata import collisions, dialects, faults, lockwait, staging
from pmigrate.metadata import delta as mdelta
from pmigrate.metadata import values as V
from pmigrate.metadata.convert import BadRow, convert_row, row_converters, row_function
from pmigrate.metadata.plan import AREA, Column, Plan, TablePlan, attach_target, reflect
from pmigrate.options import RunOptions
from pmigrate.progress import bar
from pmigrate.quote import shown
from pmigrate.report import Report


def select_sql(t: TablePlan, driver: str, *, where_orphans: bool, by_key: bool = False) -> str:
    """The rows of a table, without its orphans when it has some; in primary key order with ``by_key``."""
    q = lambda n: dialects.quote(driver, n)  # noqa: E731
    cols = ", ".join(f"c.{q(n)}" for n in t.names)
    sql = f"SELECT {cols} FROM {q(t.name)} c"
    conds = []
    for col, parent, pcol in t.fks:
        conds.append(f"(c.{q(col)} IS NULL OR EXISTS (SELECT 1 FROM {q(parent)} p WHERE p.{q(pcol)} = c.{q(col)}))")
    if where_orphans and conds:
        sql += " WHERE " + " AND ".join(conds)
    if by_key and t.pk:
        sql += " ORDER BY " + ", ".join(f"c.{q(k)}" for k in t.pk)
    return sql


def orphans(reader: dialects.SnapshotReader, t: TablePlan) -> list[tuple[str, str]]:
    """(item, message) for each row whose parent row is gone."""
    q = reader.q
    out = []
    for col, parent, pcol in t.fks:
        keys = ", ".join(f"c.{q(k)}" for k in t.pk) or "NULL"
        sql = (
            f"SELECT {keys}, c.{q(col)} FROM {q(t.name)} c WHERE c.{q(col)} IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {q(parent)} p WHERE p.{q(pcol)} = c.{q(col)})"
        )
        for row in reader.all(sql):
            key = "/".join(str(v) for v in row[:-1])
            out.append((f"{t.name}:{key}", f"{col} {shown(row[-1])} is not in {parent}: row skipped (plikd's own cleaning drops it too)"))
    return out


@dataclass
class TableResult:
    source: int = 0
    orphans: int = 0
    bad: int = 0
    changed: int | None = None
    deleted: int = 0
    kept: int = 0  # target rows whose key the source no longer has, left in place without --prune
    target: int | None = None


def _copy_table(
    plan: Plan,
    t: TablePlan,
    reader: dialects.SnapshotReader,
    writer: dialects.TargetWriter,
    res: TableResult,
    skipped_keys: dict[str, set],
    *,
    opts: RunOptions,
    report: Report,
    keyring: ssekeys.Keyring | None = None,
) -> None:
    fresh = plan.state == "empty"
    if t.name in plan.changes and plan.changes[t.name].none:
        return  # the target holds every row as the source does
    names = t.names
    convs, checks = row_converters(plan, t)
    add_keys = keyring.row_fixer(names) if keyring is not None and t.name == "files" else None
    # Children of rows skipped for a bad value: skipped too, or the target's foreign key breaks.
    parent_skips = [(names.index(col), skipped_keys[parent]) for col, parent, _ in t.fks if skipped_keys.get(parent)]
    keep_keys = len(t.pk) == 1 and any(fk[1] == t.name for other in plan.tables for fk in other.fks)
    pk_index = names.index(t.pk[0]) if t.pk else 0
    mine: set = set()
    collide = plan.collisions.get(t.name)
    key_at = [names.index(k) for k in t.pk]
    fast = row_function(convs, checks, len(names)) if (convs or checks) and not parent_skips else None

    replace = not fresh and not t.pk
    if replace:
        writer.execute(f"DELETE FROM {writer.q(t.name)}").close()
    sink = writer.sink(t.name, names, t.pk, upsert=not fresh and bool(t.pk), text_only=t.known)
    changed = 0
    # InnoDB clusters rows by primary key: in key order a fresh table grows at its end, instead of
    # touching random pages of a table larger than the buffer pool (the server's time at a million rows).
    by_key = fresh and plan.dst_driver == "mysql"
    sql = select_sql(t, plan.src_driver, where_orphans=res.orphans > 0, by_key=by_key)
    raw_seen = reader.raw_texts
    try:
        with bar(quiet=opts.quiet, every=opts.stats, desc=t.name, label=f"{AREA}: {t.name}", total=res.source - res.orphans, unit="row") as pbar:
            if t.name in plan.changes:  # a merge writes only the rows that differ on the target
                key_text = all(c.kind == V.KIND_TEXT for c in t.columns if c.name in t.pk)
                stream = mdelta.rows_to_write(plan.changes[t.name], reader, sql, names=names, key_text=key_text,
                                              batch=opts.batch_size, total=res.source - res.orphans, on_dropped=pbar.update)  # fmt: skip
            else:
                stream = reader.stream(sql, batch=opts.batch_size)
            for batch in stream:
                if collide:
                    batch, dropped = collisions.drop(batch, collide, key_at)
                    for row, skip in dropped:
                        report.problem(area=AREA, kind="key-collision", item=skip.item, message=skip.message)
                        res.bad += 1
                        if keep_keys:
                            mine.add(row[pk_index])
                raw_to = None
                if reader.raw_texts != raw_seen:  # text that is not UTF-8 in this batch: row by row
                    raw_to, raw_seen = plan.dst_driver, reader.raw_texts
                    fast_ok = False
                elif fast is not None:
                    try:
                        batch = list(map(fast, batch))
                        fast_ok = True
                    except Exception:  # noqa: BLE001 - found and named row by row below
                        fast_ok = False
                else:
                    fast_ok = not (convs or checks or parent_skips)
                if not fast_ok:
                    out = []
                    for row in batch:
                        try:
                            out.append(convert_row(row, convs, checks, parent_skips, names, t, raw_to))
                        except BadRow as bad:
                            if not opts.ignore_errors:
                                raise ItemError(
                                    f"{shown(bad.item)}: {bad.message}; fix it at the source, or pass --ignore-errors to skip "
                                    "such rows (listed in the report)",
                                    item=bad.item,
                                    kind="bad-value",
                                ) from None
                            report.problem(area=AREA, kind="skipped-row", item=bad.item, message=bad.message)
                            res.bad += 1
                            if keep_keys:
                                mine.add(row[pk_index])
                    batch = out
                if add_keys is not None:
                    batch = list(map(add_keys, batch))
                n = sink.write(batch)
                if n is not None:
                    changed += n
                if raw_to == "sqlite3":
                    writer.restore_text(t.name, names, t.pk, batch)
                pbar.update(len(batch))
        n = sink.close()
    except BaseException as exc:
        sink.abort(exc)
        raise
    if n is not None:
        changed += n
    res.changed = None if (fresh or plan.dst_driver == "mysql") else changed
    if mine:
        skipped_keys[t.name] = mine


def _gone(plan: Plan, t: TablePlan, reader: dialects.SnapshotReader, writer: dialects.TargetWriter, *, opts: RunOptions, delete: bool) -> int:
    """On a re-run: target rows whose key the source no longer has (plikd purged them); deleted with ``delete``."""
    kinds = {c.name: c.kind for c in t.columns}

    step = 1000 if "mysql" in (plan.src_driver, plan.dst_driver) else 1  # datetime(3): compare at ms

    def coarse(v: Any) -> Any:
        return v.replace(microsecond=v.microsecond - v.microsecond % step) if isinstance(v, datetime) else v

    def canon(row: Sequence[Any], driver: str, zone: tzinfo) -> tuple:
        return tuple(coarse(V.canonical(v, kind=kinds[k], driver=driver, zone=zone)) for v, k in zip(row, t.pk))

    sql = select_sql(TablePlan(t.name, [Column(k, kinds[k], None) for k in t.pk], t.pk, t.known, t.fks), plan.src_driver, where_orphans=True)
    source: set = set()
    for batch in reader.stream(sql, batch=opts.batch_size):
        source.update(canon(r, plan.src_driver, plan.src_zone) for r in batch)
    gone = []
    for batch in writer.keys(t.name, t.pk, batch=opts.batch_size):
        gone.extend(r for r in batch if canon(r, plan.dst_driver, plan.dst_zone) not in source)
    if delete:
        for chunk in batched(gone, opts.batch_size):
            writer.delete(t.name, t.pk, chunk)
    return len(gone)


def _create(plan: Plan, conn: Any) -> list[str]:
    """Plik's tables on an empty target; returns the statements to run after the load.

    On postgres and sqlite (transactional DDL) primary keys, indexes and
    foreign keys come after the rows, as pg_restore does: one bulk build and
    one validation instead of per-row upkeep. (mysql: _stage.)
    """
    from pmigrate.metadata import schema

    statements = schema.ddl(driver=plan.dst_driver, level=plan.level)
    later = []
    for stmt in statements:
        if stmt.lstrip().upper().startswith("CREATE TABLE"):
            conn.exec_driver_sql(stmt)
        else:
            later.append(stmt)
    return later


def _create_unknown(plan: Plan, conn: Any, names: Sequence[str], *, name_of: Any = None) -> None:
    from pmigrate.metadata import schema

    if not names:
        return
    with plan.src_engine.connect() as src:
        for name in names:
            schema.create_unknown_table(src, conn, name, driver=plan.dst_driver, name_of=name_of)


def _staging(plan: Plan) -> staging.Staging | None:
    """The tables a mysql target gets under staging names: all of a fresh one's, else those new to it."""
    from pmigrate.metadata import schema

    if plan.dst_driver != "mysql":
        return None
    if plan.state == "empty":
        return staging.Staging([*schema.known_tables(plan.level), *plan.unknown, ownership.OWNER_TABLE])
    return staging.Staging(t.name for t in plan.tables if not t.known and t.dst_types is None)


def _stage(plan: Plan, conn: Any, raw: Any, stage: staging.Staging, *, report: Report) -> None:
    """mysql, before any row: drop a stopped run's staging tables, create this run's (DDL commits there)."""
    from pmigrate.metadata import schema

    cur = raw.cursor()
    try:
        if plan.leftovers:
            staging.drop(cur, plan.leftovers)
            report.line(AREA, f"dropped {len(plan.leftovers)} staging table(s) a stopped run left: {', '.join(plan.leftovers[:4])}")
        if plan.state == "empty":
            for stmt in stage.ddl(schema.ddl(driver="mysql", level=plan.level)):
                cur.execute(stmt)
            # The record is staged with the tables, and appears with them.
            _record_owner(plan, raw, create=True, table=stage.name(ownership.OWNER_TABLE))
    finally:
        cur.close()
    _create_unknown(plan, conn, [t.name for t in plan.tables if not t.known and t.dst_types is None], name_of=stage.name)
    raw.commit()


def load(
    plan: Plan,
    reader: dialects.SnapshotReader,
    results: dict[str, TableResult],
    *,
    opts: RunOptions,
    report: Report,
    keyring: ssekeys.Keyring | None = None,
) -> None:
    """All rows into the target. A fresh mysql target's tables are loaded under staging names and
    renamed at the end, all at once (staging.py); elsewhere the load is one transaction."""
    fresh = plan.state == "empty"
    conn = plan.dst_engine.connect()
    raw = conn.connection.driver_connection
    created = False
    stage = _staging(plan)
    known = [t for t in plan.tables if t.known]
    unknown = [t for t in plan.tables if not t.known]
    try:
        if plan.dst_driver == "sqlite3":
            if raw.in_transaction:
                raw.rollback()
            if fresh:
                # Bulk load: orphans are filtered above, so the foreign keys hold without a
                # lookup per row (the pragma only takes effect outside a transaction).
                raw.execute("PRAGMA foreign_keys = OFF")
            raw.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages for the B-tree inserts
            raw.execute("BEGIN")  # DDL and rows in one transaction: all or nothing
        if plan.dst_driver == "postgres":
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # text without offset is UTC, as in go-sqlite3
            if fresh:  # keys and indexes are built after the rows: sort them in memory
                conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        later: list[str] = []
        claim = plan.owner.state in (ownership.OWNED, ownership.EMPTY)
        if claim and not fresh:
            _record_owner(plan, raw, create=True, write=False)  # DDL first: on mysql it commits
        if stage is not None:
            created = fresh
            _stage(plan, conn, raw, stage, report=report)
        elif fresh:
            later = _create(plan, conn)
            _record_owner(plan, raw, create=True)
        _attach_reflected(plan, conn, known, stage)
        writer = dialects.TargetWriter(raw, plan.dst_driver, tables=stage.names if stage else None)
        if fresh and plan.dst_driver == "mysql":
            # Bulk load as mysqldump does: orphans are filtered above, so the foreign keys hold.
            writer.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0").close()
        skipped_keys: dict[str, set] = {}
        for t in known:
            _copy_table(plan, t, reader, writer, results[t.name], skipped_keys, opts=opts, report=report, keyring=keyring)
            if fresh and plan.dst_driver == "mysql":
                # InnoDB bulk-loads an empty table (sorted index builds, no undo per row) only when
                # it is the transaction's first: one transaction per table, into staging tables
                # that nobody takes for the target's until they are all renamed at the end.
                raw.commit()
        for stmt in later:
            conn.exec_driver_sql(stmt)
        if unknown:
            if stage is None:
                _create_unknown(plan, conn, [t.name for t in unknown if t.dst_types is None])
            _attach_reflected(plan, conn, unknown, stage)
            for t in unknown:
                _copy_table(plan, t, reader, writer, results[t.name], skipped_keys, opts=opts, report=report)
            if plan.dst_driver == "postgres":
                _sync_sequences(conn, [t.name for t in unknown])
        if not fresh:
            prune = opts.prune and plan.owner.owned
            for t in reversed(plan.tables):
                res = results[t.name]
                if t.pk and writer.count(t.name) != res.source - res.orphans - res.bad:
                    n = mdelta.gone(plan.changes.get(t.name), writer, t.name, t.pk, delete=prune, batch=opts.batch_size) if not res.orphans else None
                    if n is None:
                        n = _gone(plan, t, reader, writer, opts=opts, delete=prune)
                    if prune:
                        res.deleted = n
                    else:
                        res.kept = n
            if claim:
                _record_owner(plan, raw)  # in the same transaction as the rows
        raw.commit()  # the driver's own: SQLAlchemy may not know a transaction is open
        if stage:
            with raw.cursor() as cur:
                stage.publish(cur)  # the tables of this run appear, all at once
        if fresh and plan.dst_driver == "mysql":
            writer.execute("SET SESSION foreign_key_checks = 1, unique_checks = 1").close()
        if fresh and plan.dst_driver == "sqlite3":
            raw.execute("PRAGMA foreign_keys = ON")
    except BaseException as exc:
        rolled_back = False
        with contextlib.suppress(Exception):
            raw.rollback()
            rolled_back = True
        gone = faults.connection_gone(raw)
        state = _after_failure(plan, created=created, stage=stage, session=lockwait.session_id(raw) if gone else None)
        with contextlib.suppress(Exception):
            if gone or not rolled_back:
                # Gone, or unusable after a stop amid a statement: not handed back to the pool,
                # whose rollback would fail; the server rolls the transaction back.
                conn.invalidate()
            conn.close()
        fault = plan.watches.fault(exc, state=state, raws={"target": raw, "source": reader.conn})
        if fault is not None:
            raise fault from exc
        if isinstance(exc, (ItemError, sa.exc.SQLAlchemyError)) or _is_driver_error(exc):
            detail = " ".join(str(exc).split())[:500]
            raise FatalError(f"metadata copy failed: {detail}. {state}") from exc
        raise
    conn.close()


def _sync_sequences(conn: Any, names: Sequence[str]) -> None:
    """Move each copied table's serial or identity sequence past its largest key.

    The rows came with their keys, which a sequence does not see: without
    this the application's next INSERT would be given a key already taken.
    """
    from pmigrate.metadata import schema

    for name in names:
        schema.sync_autoincrement(conn, sa.Table(name, sa.MetaData(), autoload_with=conn), driver="postgres")


def _record_owner(plan: Plan, raw: Any, *, create: bool = False, write: bool = True, table: str = ownership.OWNER_TABLE) -> None:
    cur = raw.cursor()
    try:
        if create:
            ownership.create_owner_table(cur, driver=plan.dst_driver, table=table)
        if write:
            ownership.write_metadata_owner(cur, driver=plan.dst_driver, source=plan.source_identity, table=table)
    finally:
        cur.close()


def _attach_reflected(plan: Plan, conn: Any, tables: Sequence[TablePlan], stage: staging.Staging | None = None) -> None:
    missing = [t for t in tables if t.dst_types is None]
    name = stage.name if stage is not None else (lambda n: n)
    if missing:
        dst = reflect(conn, plan.dst_driver, [name(t.name) for t in missing], keys=False)
        for t in missing:
            attach_target(t, dst[name(t.name)]["columns"], plan.dst_driver, fatal=FatalError)


def _is_driver_error(exc: BaseException) -> bool:
    mod = type(exc).__module__ or ""
    return mod.startswith(("psycopg", "pymysql", "sqlite3"))


def _after_failure(plan: Plan, *, created: bool, stage: staging.Staging | None, session: int | None = None) -> str:
    """Leave the target as it was, and say in which state it is: checked, not assumed."""
    # mysql: what this run staged is dropped on a connection of its own (the load's may be gone).
    discarded = stage.discard(plan.dst_engine, session=session) if stage else True
    if stage is not None and stage.published:
        return "The target holds this run's complete copy, its counts not compared; running the same command again merges and checks it."
    kept = "" if discarded else " (its staging tables could not be dropped now: the next run drops them)"
    if plan.state != "empty":
        return f"The target was rolled back to its state before this run{kept}; running the same command again converges."
    if stage is None and (plan.dst_driver in ("postgres", "sqlite3") or not created):
        return _checked_empty(plan, "The target was rolled back")
    if not discarded:
        return f"The target holds nothing of this run{kept}; running the same command again starts over."
    return _checked_empty(plan, "The target holds nothing of this run: its staging tables were dropped")


def _checked_empty(plan: Plan, done: str) -> str:
    """What a fresh target holds after a failure, looked at: another writer may have filled it meanwhile."""
    try:
        with plan.dst_engine.connect() as c:
            left = sorted(sa.inspect(c).get_table_names())
    except Exception as exc:  # noqa: BLE001
        why = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        return f"{done}, but the target could not be checked ({why}): look at it, and empty it, before running again."
    left = [t for t in left if not staging.is_staging(t)]  # the next run drops those
    if not left:
        return f"{done} and checked: it is empty as before; running the same command again starts over."
    more = f" and {len(left) - 8} more" if len(left) > 8 else ""
    return f"{done}, yet the target holds tables {', '.join(left[:8])}{more}: empty the database before running again."
