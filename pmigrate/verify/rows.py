"""Row audit: every table, source against target, by primary key, in one streamed pass.

Both sides are read in primary-key order with a binary collation (postgres
COLLATE "C", mysql CAST AS BINARY, sqlite's own BINARY), which is the order
Python compares str and int in, and merge-joined: memory holds one batch of
each side, whatever the size of the table. Each row is reduced to canonical
values (see metadata/values.py, which the copier reads them through too) and a 128-bit xxh3 digest; a table's digest is the sum of
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import xxhash
from sqlalchemy.engine import Engine

from pmigrate.batching import batched
from pmigrate.metadata import values
from pmigrate.quote import shown
from pmigrate.words import plural

AREA = "verify-rows"
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
    side: Side, sql: str, canons: list[values.Canon], *, batch_size: int, fix: Callable[[Sequence[Any]], tuple] | None = None
) -> Iterator[tuple]:
    """Canonical rows, streamed with a server-side cursor, one batch in memory."""
    with side.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_size).exec_driver_sql(sql)
        try:
            for batch in result.partitions(batch_size):
                for raw in batch if fix is None else map(fix, batch):
                    yield tuple([c(v) for c, v in zip(canons, raw)])
        finally:
            result.close()


def _digest(values: tuple) -> int:
    return xxhash.xxh3_128_intdigest(repr(values).encode("utf-8", "surrogatepass"))


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


def _merge(a: Iterator[tuple[Any, tuple]], b: Iterator[tuple[Any, tuple]], plan: TablePlan, res: TableResult) -> None:
    """Merge-join two key-ordered streams of (key, row) and record every difference."""
    na, nb = (lambda: next(a, _END)), (lambda: next(b, _END))
    x, y = na(), nb()
    while x is not _END or y is not _END:
        if y is _END or (x is not _END and x[0] < y[0]):
            res.source_rows += 1
            res.source_digest = (res.source_digest + _digest(x[1])) & MASK128
            res.add("missing", _show_key(plan, x[1]), "in the source, not in the target")
            if plan.key and len(res.missing_keys) < MAX_LISTED:
                res.missing_keys.append(tuple(x[1][i] for i in plan.key))
            x = na()
        elif x is _END or y[0] < x[0]:
            res.target_rows += 1
            res.target_digest = (res.target_digest + _digest(y[1])) & MASK128
            res.add("extra", _show_key(plan, y[1]), "in the target, not in the source")
            y = nb()
        else:
            sr, tr = x[1], y[1]
            res.source_rows += 1
            res.target_rows += 1
            res.source_digest = (res.source_digest + _digest(sr)) & MASK128
            if sr == tr:
                res.target_digest = (res.target_digest + _digest(sr)) & MASK128
                res.ok += 1
            else:
                res.target_digest = (res.target_digest + _digest(tr)) & MASK128
                diffs = _differing(plan, sr, tr)
                if diffs:
                    res.add("changed", _show_key(plan, sr), "columns differ: " + "; ".join(diffs))
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


def audit_table(plan: TablePlan, src: Side, dst: Side, *, batch_size: int, tmp_dir: str | None = None) -> TableResult:
    """Compare one table; the streams are merged straight when their order can be trusted."""
    if plan.trusted_order:
        res = TableResult(name=plan.name)
        try:
            a = _keyed_in_order(
                _rows(src, _select(src, plan, plan.src_order), plan.src_canon, batch_size=batch_size, fix=plan.src_fix), plan.key
            )
            b = _keyed_in_order(_rows(dst, _select(dst, plan, plan.dst_order), plan.dst_canon, batch_size=batch_size), plan.key)
            try:
                _merge(a, b, plan, res)
            except TypeError:
                raise _OutOfOrder from None  # keys Python cannot order (NULL, mixed types)
            finally:
                a.close()
                b.close()
            return res
        except _OutOfOrder:
            pass  # e.g. sqlite text and integers in one key column: sort on disk instead
    res = TableResult(name=plan.name)
    with tempfile.TemporaryDirectory(prefix="pmigrate-verify-", dir=tmp_dir) as tmp:
        db = sqlite3.connect(os.path.join(tmp, "sort.db"))
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            _load_sorted(_rows(src, _select(src, plan, ()), plan.src_canon, batch_size=batch_size, fix=plan.src_fix), plan.key, db, "s")
            _load_sorted(_rows(dst, _select(dst, plan, ()), plan.dst_canon, batch_size=batch_size), plan.key, db, "t")
            _merge(_read_sorted(db, "s"), _read_sorted(db, "t"), plan, res)
        finally:
            db.close()
    return res


def _empty(side: Side, table: str) -> bool:
    with side.engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT 1 FROM {_quote(side.engine, table)} LIMIT 1").first() is None


def audit(
    src: Side,
    dst: Side,
    *,
    report: Any,
    batch_size: int = 5000,
    quiet: bool = True,
    stats: float = 0.0,
    with_sessions: bool = False,
    tmp_dir: str | None = None,
    fixes: Mapping[str, Callable[[Sequence[str]], Any]] | None = None,
) -> bool:
    """Audit every table, recording figures, summary lines and problems; True when all match.

    cli_auth_sessions is copied only on request (--with-sessions): it is
    compared then, or when the target holds any, and skipped otherwise.
    ``fixes`` maps a table to what the copy changes in its rows: given the
    compared columns, a function from a source row to the row the target
    must hold (e.g. files getting SSE-C keys made by pmigrate).
    """
    from pmigrate.progress import bar

    plans, schema_problems = plan_tables(src, dst)
    for plan in plans:
        if fixes and plan.name in fixes:
            plan.src_fix = fixes[plan.name](plan.columns)
    section = report.section(AREA)
    tables: dict[str, Any] = section.setdefault("tables", {})
    clean = True
    for kind, item, message in schema_problems:
        clean = False
        report.problem(area=AREA, kind=kind, item=item, message=message)
        report.line(AREA, f"{item}: {message}")
    with bar(quiet=quiet, every=stats, desc="verify rows", label=AREA, total=len(plans), unit="table") as progress:
        for plan in plans:
            if plan.name == SESSIONS and not with_sessions and _empty(dst, SESSIONS):
                tables[plan.name] = {"skipped": "short-lived login handshakes, copied only with --with-sessions"}
                report.line(AREA, f"{plan.name}: skipped (none in the target; copied only with --with-sessions)")
                progress.update(1)
                continue
            if plan.only_src or plan.only_dst:
                clean = False
                msg = f"columns only in the source: {plan.only_src or '-'}; only in the target: {plan.only_dst or '-'}"
                report.problem(area=AREA, kind="columns", item=plan.name, message=msg)
            res = audit_table(plan, src, dst, batch_size=batch_size, tmp_dir=tmp_dir)
            _explain_collided(plan, dst, res)
            tables[plan.name] = res.figures()
            for kind, item, message in res.problems:
                report.problem(area=AREA, kind=kind, item=item, message=message)
            unlisted = sum(getattr(res, k) - res.listed.get(k, 0) for k in ("missing", "extra", "changed"))
            if unlisted:
                report.warn(f"{plan.name}: {plural(unlisted, 'more differing row')} than listed (limit {MAX_LISTED} per kind)")
            if not res.clean:
                clean = False
                report.fail()
            report.line(AREA, _summary_line(res))
            progress.update(1)
    section["ok"] = clean
    return clean


def _explain_collided(plan: TablePlan, dst: Side, res: TableResult) -> None:
    """A mysql target's collation may take a missing row's key for another one: name that one."""
    if dst.driver != "mysql" or not res.missing_keys or any(plan.kinds[i] != "text" for i in plan.key):
        return
    from pmigrate.verify import collided

    found, collation = collided.spellings(dst, plan.name, [plan.columns[i] for i in plan.key], res.missing_keys)
    if not found:
        return
    shown = {f"{plan.name}:{'/'.join(map(str, k))}": "/".join(map(str, v)) for k, v in found.items()}
    for n, (kind, item, message) in enumerate(res.problems):
        if kind == "missing" and item in shown:
            res.problems[n] = (kind, item, f"{message}: the target's {shown[item]} is the same key in its collation {collation} "
                               "(it tells no case, accents or trailing spaces apart), so this row cannot be stored beside it")
    res.collided = len(found)


def _summary_line(res: TableResult) -> str:
    head = f"{res.name}: {plural(res.source_rows, 'source row')}, {plural(res.target_rows, 'target row')}, {res.ok} ok"
    parts = []
    for kind in ("missing", "extra", "changed"):
        n = getattr(res, kind)
        if n:
            first = ", ".join(map(shown, res.first.get(kind, [])))
            parts.append(f"{n} {kind} (first: {first})")
    if res.collided:
        parts.append(f"{res.collided} missing under a key the target's collation takes for another row's")
    return head + (", " + ", ".join(parts) if parts else "")
