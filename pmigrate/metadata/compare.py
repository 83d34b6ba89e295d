"""Every table compared, source against target, by primary key, in one streamed pass.

verify's row audit reports it (verify/rows.py); the copy's dry run counts with it
what a pass would insert, update and delete.

Both sides are read in primary-key order with a binary collation (postgres
COLLATE "C", mysql CAST AS BINARY, sqlite's own BINARY), which is the order
Python compares str and int in, and merge-joined: memory holds one batch of
each side, whatever the size of the table. Each row is reduced to canonical
values (metadata/values.py, which the copier reads them through too) and a
128-bit xxh3 digest; a table's digest is the sum of
its rows' digests (mod 2**128), the same on every driver, so an audit can be
re-proved later by comparing two numbers. Where the database's order cannot be
trusted to match Python's (timestamp keys stored as text with offsets, tables
without a primary key, mixed sqlite storage classes), both sides are sorted on
disk in a temporary SQLite file by an exact encoding of the key instead.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import xxhash
from sqlalchemy.engine import Engine

from pmigrate.batching import batched
from pmigrate.metadata import values

MASK128 = (1 << 128) - 1
# Differences listed one by one per table and kind; past this, only counted.
MAX_LISTED = 20_000
# Keys named in the summary line of a table, per kind.
FIRST_KEYS = 3

SESSIONS = "cli_auth_sessions"


@dataclass(frozen=True, kw_only=True)
class Side:
    """One metadata database as the audit sees it."""

    engine: Engine
    driver: str  # sqlite3 | postgres | mysql
    zone: Any = values.UTC  # zone of naive timestamps (values.zone_of)


@dataclass(kw_only=True)
class TablePlan:
    name: str
    columns: list[str]  # compared columns, source order
    kinds: list[str]
    key: list[int]  # indexes into columns; empty: the whole row is the key
    src_canon: list[values.Canon]
    dst_canon: list[values.Canon]
    src_order: list[str]  # ORDER BY expressions per side
    dst_order: list[str]
    trusted_order: bool  # the databases' order equals Python's: merge straight from the cursors
    slack: list[int] = field(default_factory=list)  # per column: ns a timestamp may differ by (target rounding)
    only_src: list[str] = field(default_factory=list)  # columns missing from the target
    only_dst: list[str] = field(default_factory=list)
    src_fix: Callable[[Sequence[Any]], tuple] | None = None  # a source row as the copy writes it, where it changes one


@dataclass(kw_only=True)
class TableResult:
    name: str
    source_rows: int = 0
    target_rows: int = 0
    ok: int = 0
    missing: int = 0
    extra: int = 0
    changed: int = 0
    source_digest: int = 0
    target_digest: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, item, message)
    first: dict[str, list[str]] = field(default_factory=dict)
    listed: dict[str, int] = field(default_factory=dict)
    missing_keys: list[tuple] = field(default_factory=list)  # canonical keys of the listed missing rows
    collided: int = 0  # missing rows whose key the target holds under another spelling
    as_read: bool = False  # compared as read (differences()): extra rows were told with their keys as read

    def add(self, kind: str, key: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        firsts = self.first.setdefault(kind, [])
        if len(firsts) < FIRST_KEYS:
            firsts.append(key)
        if self.listed.get(kind, 0) < MAX_LISTED:
            self.listed[kind] = self.listed.get(kind, 0) + 1
            self.problems.append((kind, f"{self.name}:{key}", message))

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.changed) and self.source_rows == self.target_rows

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "ok": self.ok,
            "missing": self.missing,
            "extra": self.extra,
            "changed": self.changed,
            "source_digest": f"{self.source_digest:032x}",
            "target_digest": f"{self.target_digest:032x}",
        }
        if self.first:
            out["first_keys"] = self.first
        if self.collided:
            out["collided"] = self.collided
        return out


class _OutOfOrder(Exception):
    """A side's rows came in an order Python does not agree with."""


# -- planning ----------------------------------------------------------------


def _known_order(src: Side) -> list[str]:
    """Plik's tables at the source's schema level, in foreign-key order."""
    from pmigrate.metadata import schema

    with src.engine.connect() as conn:
        level = schema.detect_level(conn)
    return schema.known_tables(level)


def _quote(engine: Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote_identifier(name)


def _order_expr(side: Side, column: str, kind: str) -> str:
    q = _quote(side.engine, column)
    if kind not in ("text",):
        return q
    if side.driver == "postgres":
        return f'{q} COLLATE "C"'
    if side.driver == "mysql":
        return f"CAST({q} AS BINARY)"
    return f"{q} COLLATE BINARY"


def plan_tables(src: Side, dst: Side) -> tuple[list[TablePlan], list[tuple[str, str, str]]]:
    """The tables to compare, and schema problems (kind, item, message) found on the way.

    Known tables in foreign-key order, then tables pmigrate does not know in
    name order; cli_auth_sessions only when the target has it (it is copied
    only on request).
    """
    si, di = sa.inspect(src.engine), sa.inspect(dst.engine)
    from pmigrate.ownership import OWNER_TABLE

    # pmigrate's own record of whose the target is: not the deployment's data
    src_tables, dst_tables = set(si.get_table_names()) - {OWNER_TABLE}, set(di.get_table_names()) - {OWNER_TABLE}
    known = _known_order(src)
    names = [t for t in known if t in src_tables] + sorted(src_tables - set(known))
    plans: list[TablePlan] = []
    problems: list[tuple[str, str, str]] = []
    for name in names:
        if name not in dst_tables:
            if name != SESSIONS:
                problems.append(("missing-table", name, "table in the source, absent from the target"))
            continue
        plans.append(_plan_table(name, src, dst, si, di))
    return plans, problems


def _plan_table(name: str, src: Side, dst: Side, si: Any, di: Any) -> TablePlan:
    scols = {c["name"]: c for c in si.get_columns(name)}
    dcols = {c["name"]: c for c in di.get_columns(name)}
    columns = [c for c in scols if c in dcols]
    kinds, src_canon, dst_canon, slack = [], [], [], []
    for c in columns:
        st, dt_ = scols[c]["type"], dcols[c]["type"]
        kind = values.compare_kind((src.driver, st), (dst.driver, dt_))
        kinds.append(kind)
        precision, tolerance = 9, 0
        if kind == "time":
            sp, dp = values.time_fsp(src.driver, st), values.time_fsp(dst.driver, dt_)
            precision = min(sp, dp)
            if dp < sp:  # the target may have rounded where truncation was expected (MySQL, postgres from text)
                tolerance = 10 ** (9 - max(0, dp))
        slack.append(tolerance)
        src_canon.append(values.canon_for(kind, precision=precision, zone=src.zone))
        dst_canon.append(values.canon_for(kind, precision=precision, zone=dst.zone))
    pk = list(si.get_pk_constraint(name).get("constrained_columns") or []) or list(
        di.get_pk_constraint(name).get("constrained_columns") or []
    )
    if not pk:
        pk = _schema_pk(name)
    key = [columns.index(c) for c in pk if c in columns] if pk and all(c in columns for c in pk) else []
    trusted = bool(key) and all(kinds[i] in ("text", "int") for i in key)
    src_order = [_order_expr(src, columns[i], kinds[i]) for i in key]
    dst_order = [_order_expr(dst, columns[i], kinds[i]) for i in key]
    return TablePlan(
        name=name,
        columns=columns,
        kinds=kinds,
        key=key,
        src_canon=src_canon,
        dst_canon=dst_canon,
        src_order=src_order,
        dst_order=dst_order,
        trusted_order=trusted,
        slack=slack,
        only_src=[c for c in scols if c not in dcols],
        only_dst=[c for c in dcols if c not in scols],
    )


def _schema_pk(name: str) -> list[str]:
    try:
        from pmigrate.metadata import schema  # type: ignore[attr-defined]

        return list(schema.primary_key(name) or [])
    except Exception:  # noqa: BLE001
        return []


# -- reading -----------------------------------------------------------------


def _select(side: Side, plan: TablePlan, order: Sequence[str]) -> str:
    cols = ", ".join(_quote(side.engine, c) for c in plan.columns)
    sql = f"SELECT {cols} FROM {_quote(side.engine, plan.name)}"
    if order:
        sql += " ORDER BY " + ", ".join(order)
    return sql


def _rows(
    side: Side, sql: str, canons: list[values.Canon] | None, *, batch_size: int, fix: Callable[[Sequence[Any]], tuple] | None = None
) -> Iterator[tuple]:
    """Canonical rows (``canons`` None: as read), streamed with a server-side cursor, one batch in memory."""
    if canons is None and side.driver == "sqlite3":
        yield from _sqlite_rows(side, sql, batch_size=batch_size, fix=fix)
        return
    with side.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_size).exec_driver_sql(sql)
        try:
            for batch in result.partitions(batch_size):
                for raw in batch if fix is None else map(fix, batch):
                    yield tuple(raw) if canons is None else tuple([c(v) for c, v in zip(canons, raw)])
        finally:
            result.close()


def _sqlite_rows(side: Side, sql: str, *, batch_size: int, fix: Callable[[Sequence[Any]], tuple] | None) -> Iterator[tuple]:
    """Rows as read, from the driver's own cursor: SQLite steps through them without a row object each."""
    with side.engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(sql)
            while batch := cur.fetchmany(batch_size):
                yield from batch if fix is None else map(fix, batch)
        finally:
            cur.close()


def _digest(values: tuple) -> int:
    return xxhash.xxh3_128_intdigest(repr(values).encode("utf-8", "surrogatepass"))


def _no_digest(values: tuple) -> int:
    return 0


def _keyed_in_order(rows: Iterator[tuple], key: list[int]) -> Iterator[tuple[Any, tuple]]:
    """(key, row) straight from an ordered cursor, checking that the order holds in Python."""
    prev = None
    for row in rows:
        k = tuple([row[i] for i in key])
        if prev is not None:
            try:
                if not prev < k:
                    raise _OutOfOrder
            except TypeError:
                raise _OutOfOrder from None
        prev = k
        yield k, row


def _load_sorted(rows: Iterator[tuple], key: list[int], db: sqlite3.Connection, table: str) -> None:
    """Store (exact key encoding, row) on disk, to read back in key order."""
    db.execute(f"CREATE TABLE {table} (k BLOB NOT NULL, v BLOB NOT NULL)")
    insert = f"INSERT INTO {table} VALUES (?, ?)"

    def entry(row: tuple) -> tuple[bytes, bytes]:
        k = tuple([row[i] for i in key]) if key else row
        return repr(k).encode("utf-8", "surrogatepass"), marshal.dumps(row)

    for batch in batched(map(entry, rows), 5000):
        db.executemany(insert, batch)
    db.commit()


def _read_sorted(db: sqlite3.Connection, table: str) -> Iterator[tuple[bytes, tuple]]:
    cur = db.execute(f"SELECT k, v FROM {table} ORDER BY k")
    while True:
        chunk = cur.fetchmany(5000)
        if not chunk:
            break
        for k, v in chunk:
            yield k, marshal.loads(v)


# -- comparing ---------------------------------------------------------------

_END = object()


def _merge(
    a: Iterator[tuple[Any, tuple]],
    b: Iterator[tuple[Any, tuple]],
    plan: TablePlan,
    res: TableResult,
    on_diff: Callable[[str, tuple], None] | None = None,
    raw: tuple[list[values.Canon], list[values.Canon]] | None = None,
) -> None:
    """Merge-join two key-ordered streams of (key, row) and record every difference.

    ``on_diff(kind, source row)``: told of every source row missing from the target or changed there;
    with ``raw``, also of every target row the source lacks (``extra``, the row as read).
    ``raw``: (source, target) canons of rows that come as read: a pair equal as read is equal, others are
    made canonical to be compared; no digests are summed then (see differences()).
    """
    na, nb = (lambda: next(a, _END)), (lambda: next(b, _END))
    digest = _digest if raw is None else _no_digest
    src_canon = (lambda row: row) if raw is None else (lambda row: tuple([c(v) for c, v in zip(raw[0], row)]))  # noqa: E731
    dst_canon = (lambda row: row) if raw is None else (lambda row: tuple([c(v) for c, v in zip(raw[1], row)]))  # noqa: E731
    x, y = na(), nb()
    while x is not _END or y is not _END:
        if y is _END or (x is not _END and x[0] < y[0]):
            sr = src_canon(x[1])
            res.source_rows += 1
            res.source_digest = (res.source_digest + digest(sr)) & MASK128
            res.add("missing", _show_key(plan, sr), "in the source, not in the target")
            if plan.key and len(res.missing_keys) < MAX_LISTED:
                res.missing_keys.append(tuple(sr[i] for i in plan.key))
            if on_diff is not None:
                on_diff("missing", sr)
            x = na()
        elif x is _END or y[0] < x[0]:
            tr = dst_canon(y[1])
            res.target_rows += 1
            res.target_digest = (res.target_digest + digest(tr)) & MASK128
            res.add("extra", _show_key(plan, tr), "in the target, not in the source")
            if on_diff is not None and raw is not None:
                on_diff("extra", y[1])  # as read: the key to delete it by
            y = nb()
        else:
            sr, tr = x[1], y[1]
            if raw is not None and sr != tr:
                sr, tr = src_canon(sr), dst_canon(tr)
            res.source_rows += 1
            res.target_rows += 1
            res.source_digest = (res.source_digest + digest(sr)) & MASK128
            if sr == tr:
                res.target_digest = (res.target_digest + digest(sr)) & MASK128
                res.ok += 1
            else:
                res.target_digest = (res.target_digest + digest(tr)) & MASK128
                diffs = _differing(plan, sr, tr)
                if diffs:
                    res.add("changed", _show_key(plan, sr), "columns differ: " + "; ".join(diffs))
                    if on_diff is not None:
                        on_diff("changed", sr)
                else:
                    res.ok += 1
            x, y = na(), nb()


def _differing(plan: TablePlan, sr: tuple, tr: tuple) -> list[str]:
    """Columns whose canonical values differ, allowing a timestamp rounded (not truncated) by the target."""
    out = []
    for i, (s, t) in enumerate(zip(sr, tr)):
        if s == t:
            continue
        kind = plan.kinds[i]
        if plan.slack and plan.slack[i] and type(s) is int and type(t) is int and t - s == plan.slack[i]:
            continue  # rounded up by the target (MySQL, postgres parsing text) where truncation was expected
        out.append(f"{plan.columns[i]} (source {values.show(s, kind)}, target {values.show(t, kind)})")
    return out


def _show_key(plan: TablePlan, row: tuple) -> str:
    idx = plan.key or range(len(plan.columns))
    parts = [row[i] for i in idx]
    text = "/".join("NULL" if p is None else values.show(p, plan.kinds[i]) if plan.kinds[i] == "time" else str(p) for p, i in zip(parts, idx))
    return text if len(text) <= 200 else text[:197] + "..."


def audit_table(
    plan: TablePlan,
    src: Side,
    dst: Side,
    *,
    batch_size: int,
    tmp_dir: str | None = None,
    on_diff: Callable[[str, tuple], None] | None = None,
) -> TableResult:
    """Compare one table; the streams are merged straight when their order can be trusted (``on_diff``: see _merge)."""
    if plan.trusted_order:
        res = TableResult(name=plan.name)
        try:
            a = _keyed_in_order(
                _rows(src, _select(src, plan, plan.src_order), plan.src_canon, batch_size=batch_size, fix=plan.src_fix), plan.key
            )
            b = _keyed_in_order(_rows(dst, _select(dst, plan, plan.dst_order), plan.dst_canon, batch_size=batch_size), plan.key)
            try:
                _merge(a, b, plan, res, on_diff)
            except TypeError:
                raise _OutOfOrder from None  # keys Python cannot order (NULL, mixed types)
            finally:
                a.close()
                b.close()
            return res
        except _OutOfOrder:
            pass  # e.g. sqlite text and integers in one key column: sort on disk instead
    res = TableResult(name=plan.name)
    with tempfile.TemporaryDirectory(prefix="pmigrate-rows-", dir=tmp_dir) as tmp:
        db = sqlite3.connect(os.path.join(tmp, "sort.db"))
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            _load_sorted(_rows(src, _select(src, plan, ()), plan.src_canon, batch_size=batch_size, fix=plan.src_fix), plan.key, db, "s")
            _load_sorted(_rows(dst, _select(dst, plan, ()), plan.dst_canon, batch_size=batch_size), plan.key, db, "t")
            _merge(_read_sorted(db, "s"), _read_sorted(db, "t"), plan, res, on_diff)
        finally:
            db.close()
    return res


def differences(
    plan: TablePlan, src: Side, dst: Side, *, batch_size: int, on_diff: Callable[[str, tuple], None]
) -> TableResult:
    """Which source rows are missing from the target or differ there (``on_diff``), as audit_table finds them.

    No digests: between two databases of one driver and zone, rows equal as
    read are taken as equal without being made canonical, which is most of
    the cost of an audit when few rows changed. Elsewhere, the audit itself.
    """
    if plan.key and src.driver == dst.driver and src.zone == dst.zone:
        # Keys as read, in each database's order: where Python orders them otherwise, _OutOfOrder says so.
        res = TableResult(name=plan.name)
        a = _keyed_in_order(_rows(src, _select(src, plan, plan.src_order), None, batch_size=batch_size, fix=plan.src_fix), plan.key)
        b = _keyed_in_order(_rows(dst, _select(dst, plan, plan.dst_order), None, batch_size=batch_size), plan.key)
        try:
            _merge(a, b, plan, res, on_diff, raw=(plan.src_canon, plan.dst_canon))
            res.as_read = True
            return res
        except (TypeError, _OutOfOrder):
            pass  # keys as read that Python orders otherwise: the audit, on canonical keys
        finally:
            a.close()
            b.close()
    return audit_table(plan, src, dst, batch_size=batch_size, on_diff=on_diff)


def empty(side: Side, table: str) -> bool:
    """Whether the table holds no row."""
    with side.engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT 1 FROM {_quote(side.engine, table)} LIMIT 1").first() is None
