"""The metadata stage: every row of a Plik database into another one, in foreign-key order.

preflight() reads and checks everything (levels, the target's state, values
that would not fit) and writes nothing. run() reads the whole source inside
one read transaction, streams each table in batches through per-column
converters (values.py) into bulk writers (dialects.py), all in one target
transaction, then proves the result with per-table counts.

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
import functools
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Sequence

import sqlalchemy as sa

from pmigrate import ownership
from pmigrate.data import ssekeys
from pmigrate.errors import ConfigError, FatalError, ItemError, PmigrateError
from pmigrate.metadata import collisions, dialects, faults, grants, lockwait, staging
from pmigrate.metadata import delta as mdelta
from pmigrate.metadata import values as V
from pmigrate.metadata.rawtext import RawText
from pmigrate.options import RunOptions
from pmigrate.progress import bar
from pmigrate.quote import shown
from pmigrate.report import Report
from pmigrate.words import plural

AREA = "metadata"
SESSIONS = "cli_auth_sessions"

# Plik's foreign keys (PLIK.md), checked even where a source lacks the constraint.
PLIK_FKS = (("tokens", "user_id", "users", "id"), ("files", "upload_id", "uploads", "id"))

# Offending values named in a refusal before the user is sent to --ignore-errors.
MAX_NAMED = 5


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # values.KIND_*
    src_type: Any
    dst_type: Any = None


@dataclass
class TablePlan:
    name: str
    columns: list[Column]
    pk: list[str]
    known: bool
    fks: list[tuple[str, str, str]] = field(default_factory=list)  # (column, parent table, parent column)
    dst_types: dict[str, Any] | None = None  # reflected on the target (None until the schema exists)
    planned_types: dict[str, Any] = field(default_factory=dict)  # what the target will get (mysql), before it exists

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass
class Plan:
    src_driver: str
    dst_driver: str
    src_desc: str
    dst_desc: str
    src_engine: Any
    dst_engine: Any
    level: str
    state: str  # 'empty' | 'same-level'
    tables: list[TablePlan]
    skipped_tables: list[str]
    unknown: list[str]
    src_zone: tzinfo
    dst_zone: tzinfo
    source_identity: str = ""  # pmigrate.ownership.metadata_source
    dst_schema: str = ""  # postgres: the schema rows go into
    owner: ownership.Ownership = ownership.Ownership(ownership.EMPTY)
    oversized: list[str] = field(default_factory=list)  # found in preflight, skipped with --ignore-errors
    nul_columns: set[tuple[str, str]] = field(default_factory=set)  # (table, column) with NULs (postgres target)
    keys_journal: tuple[Any, str] | None = None  # (path, identity) of the journal SSE-C keys derive from, if made
    collisions: dict[str, dict[str, collisions.Skip]] = field(default_factory=dict)  # mysql: keys one on the target
    leftovers: list[str] = field(default_factory=list)  # staging tables a stopped run left (mysql target)
    watches: lockwait.Watches = field(default_factory=lambda: lockwait.Watches(timeout=60))
    changes: dict[str, mdelta.TableChanges] = field(default_factory=dict)  # merge: the rows that differ (metadata/delta.py)


# -- preflight ---------------------------------------------------------------


def _zone(meta: Any) -> tzinfo:
    return V.mysql_zone(meta) if meta.driver == "mysql" else V.UTC


def _sqlite_target_absent(meta: Any) -> bool:
    """A target sqlite file that does not exist yet: empty, and not created by looking at it."""
    from pmigrate.metadata import db

    path = db.sqlite_file(meta)
    if path is None or path.exists():
        return False
    import os

    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise ConfigError(f"folder {path.parent} for the target sqlite3 database is missing or not writable: create it or fix its permissions")
    return True


def _reflect(conn: Any, driver: str, names: Sequence[str], *, keys: bool = True) -> dict[str, dict[str, Any]]:
    insp = sa.inspect(conn)
    out: dict[str, dict[str, Any]] = {}
    for t in names:
        out[t] = {"columns": [(c["name"], c["type"]) for c in insp.get_columns(t)]}
        if not keys:
            continue
        out[t] |= {
            "pk": list(insp.get_pk_constraint(t).get("constrained_columns") or []),
            "fks": [
                (fk["constrained_columns"][0], fk["referred_table"], fk["referred_columns"][0])
                for fk in insp.get_foreign_keys(t)
                if len(fk.get("constrained_columns") or []) == 1 and fk.get("referred_columns")
            ],
        }
    return out


def preflight(src: Any, dst: Any, *, opts: RunOptions) -> Plan:
    """Everything checked, nothing written: the plan of the copy."""
    watches = lockwait.Watches(timeout=opts.lock_timeout)
    try:
        return _preflight(src, dst, opts=opts, watches=watches)
    except BaseException as exc:
        watches.stop()
        fault = watches.fault(exc, state="Nothing was written.")
        if fault is not None:
            raise fault from exc
        raise


def _preflight(src: Any, dst: Any, *, opts: RunOptions, watches: lockwait.Watches) -> Plan:
    from pmigrate.metadata import db, schema

    db.check_connect(src.metadata, must_exist=True, read_only=True)
    absent = _sqlite_target_absent(dst.metadata)
    if not absent:
        db.check_connect(dst.metadata, must_exist=False)
    src_engine = db.source_engine(src.metadata, lock_timeout=opts.lock_timeout)
    # mysql: LOAD DATA LOCAL into a fresh target
    dst_engine = db.engine(dst.metadata, local_infile=True, lock_timeout=opts.lock_timeout)
    watches.watch("source", src.metadata, src_engine)
    watches.watch("target", dst.metadata, dst_engine)
    sd, dd = src.metadata.driver, dst.metadata.driver

    with src_engine.connect() as c:
        level = schema.detect_level(c).name
        present = set(sa.inspect(c).get_table_names())
        known = [t for t in schema.known_tables(level) if t in present]
        unknown = schema.unknown_tables(c, level)
        skipped = [t for t in known if t == SESSIONS and not opts.with_sessions]
        names = [t for t in known if t not in skipped] + unknown
        refl = _reflect(c, sd, names)
        planned = {t: _unknown_types(c, t, dd) for t in unknown} if dd == "mysql" else {}

    source_identity = ownership.metadata_source(src.metadata)
    owner = ownership.Ownership(ownership.EMPTY)
    leftovers: list[str] = []
    if absent:
        state = "empty"
        dst_refl: dict[str, dict[str, Any]] = {}
    else:
        with dst_engine.connect() as c:
            state = schema.check_target(c, level=level, extra_tables=tuple(unknown))
            have = set(sa.inspect(c).get_table_names())
            leftovers = staging.leftovers(have) if dd == "mysql" else []
            dst_refl = _reflect(c, dd, [t for t in names if t in have]) if state == "same-level" else {}
            if state == "same-level":
                owner = ownership.metadata_state(c, source=source_identity, tables=sorted(have & set(names)))
    _check_owner(owner, dst.metadata.describe(), source_identity, opts=opts)

    tables = []
    for t in names:
        r = refl[t]
        fks = list(r["fks"])
        for child, col, parent, pcol in PLIK_FKS:
            if child == t and parent in present and (col, parent, pcol) not in fks:
                fks.append((col, parent, pcol))
        pk = r["pk"] or (list(schema.primary_key(t)) if t in known else [])
        plan_t = TablePlan(
            name=t,
            columns=[Column(n, V.column_kind(sd, ty), ty) for n, ty in r["columns"]],
            pk=pk,
            known=t in known,
            fks=[fk for fk in fks if fk[1] in names],
        )
        if t in dst_refl:
            _attach_target(plan_t, dst_refl[t]["columns"], dd, fatal=ConfigError)
        elif dd == "mysql":
            plan_t.planned_types = planned.get(t) or _mysql_ddl_types(level).get(t, {})
        tables.append(plan_t)

    plan = Plan(
        src_driver=sd,
        dst_driver=dd,
        src_desc=src.metadata.describe(),
        dst_desc=dst.metadata.describe(),
        src_engine=src_engine,
        dst_engine=dst_engine,
        level=level,
        state=state,
        tables=tables,
        skipped_tables=skipped,
        unknown=unknown,
        src_zone=_zone(src.metadata),
        dst_zone=_zone(dst.metadata),
        source_identity=source_identity,
        owner=owner,
        leftovers=leftovers,
        watches=watches,
    )
    if ssekeys.needed(src, dst):
        plan.keys_journal = _keys_journal(plan, dst, opts=opts)
    plan.dst_schema = grants.check(plan, dst.metadata, opts=opts)  # before the source's scans below
    if dd == "mysql":
        _check_lengths(plan, opts=opts)
        plan.collisions = collisions.check(plan, opts=opts)
    if dd == "postgres" and sd != "postgres":
        _check_nuls(plan, opts=opts)
    return plan


def _check_owner(owner: ownership.Ownership, where: str, source: str, *, opts: RunOptions) -> None:
    """Refuse a target this source did not fill (unless --merge), and --prune anywhere but in one it did."""
    if owner.state in (ownership.FOREIGN, ownership.OTHER):
        if not opts.merge:
            raise ownership.refuse(what="database", where=where, source=source, found=owner)
        if opts.prune:
            raise ConfigError(
                f"--prune deletes rows only in a target pmigrate filled from this source, and {where} is not one: "
                "drop --prune to merge without deleting"
            )


def _keys_journal(plan: Plan, dst: Any, *, opts: RunOptions) -> tuple[Any, str]:
    """Where the secret of the SSE-C keys this copy writes is kept: the target's blob journal (checked, not written)."""
    from pmigrate.transfer.journal import Journal, locate

    files = next((t for t in plan.tables if t.name == "files"), None)
    if files is None or "backend_details" not in files.names:
        raise ConfigError(
            "the target uses SSE = \"SSE-C\" and the source's files have no SSE-C keys, nor a backend_details column "
            "to hold the ones pmigrate would make: migrate to a target with SSE = \"\" or \"S3\""
        )
    path, identity = locate(dst, opts.journal)
    journal = Journal.peek(path, identity=identity)  # refuses another target's journal
    if journal is not None:
        journal.close()
    return path, identity


def _attach_target(t: TablePlan, dst_columns: Sequence[tuple[str, Any]], driver: str, *, fatal: type[Exception]) -> None:
    """Match the source's columns with the target's; a column the target lacks is refused."""
    types = dict(dst_columns)
    missing = [c.name for c in t.columns if c.name not in types]
    if missing:
        raise fatal(
            f"target table {t.name} has no column {', '.join(missing)}: the target is not at the source's schema level; "
            "use an empty target database"
        )
    cols = []
    for c in t.columns:
        kind = c.kind
        dkind = V.column_kind(driver, types[c.name])
        if kind == V.KIND_OTHER or dkind in (V.KIND_BOOL, V.KIND_TIME):
            kind = dkind if dkind != V.KIND_OTHER else kind
        cols.append(Column(c.name, kind, c.src_type, types[c.name]))
    t.columns = cols
    t.dst_types = types


def _length_sql(driver: str) -> str:
    return "LENGTH" if driver == "sqlite3" else "CHAR_LENGTH"


def _target_limits(plan: Plan, t: TablePlan) -> dict[str, int]:
    """Characters each bounded target column holds (mysql varchar); {} when unknown yet."""
    types = t.dst_types if t.dst_types is not None else t.planned_types
    out = {}
    for c in t.columns:
        ty = types.get(c.name)
        limit = V.text_limit(plan.dst_driver, ty) if ty is not None else None
        if limit is not None and c.kind == V.KIND_TEXT or (limit is not None and c.kind == V.KIND_OTHER):
            out[c.name] = limit
    return out


def _unknown_types(conn: Any, table: str, driver: str) -> dict[str, Any]:
    from pmigrate.metadata import schema

    return {c.name: c.type for c in schema.reflect_unknown_table(conn, table, driver=driver).columns}


_CREATE = re.compile(r"CREATE TABLE `(\w+)` \((.*?)\n\)", re.S)
_VARCHAR = re.compile(r"^\s*`(\w+)` (?:varchar|char)\((\d+)\)", re.M)


@functools.lru_cache(maxsize=None)
def _mysql_ddl_types(level: str) -> dict[str, dict[str, Any]]:
    """Bounded string columns of Plik's mysql tables at a level, read from the DDL the target will get."""
    from sqlalchemy.dialects.mysql import VARCHAR

    from pmigrate.metadata import schema

    text = "\n".join(schema.ddl(driver="mysql", level=level))
    return {
        m.group(1): {c: VARCHAR(int(n)) for c, n in _VARCHAR.findall(m.group(2))}
        for m in _CREATE.finditer(text)
    }


def _check_lengths(plan: Plan, *, opts: RunOptions) -> None:
    """Values longer than a mysql varchar: refused before anything is written (or listed for --ignore-errors)."""
    sd = plan.src_driver
    q = lambda n: dialects.quote(sd, n)  # noqa: E731
    found: list[str] = []
    with plan.src_engine.connect() as c:
        for t in plan.tables:
            limits = _target_limits(plan, t)
            if not limits or not t.pk:
                continue
            fn = _length_sql(sd)
            cond = " OR ".join(f"{fn}({q(col)}) > {n}" for col, n in limits.items())
            lens = ", ".join(f"{fn}({q(col)})" for col in limits)
            pk = ", ".join(q(k) for k in t.pk)
            sql = f"SELECT {pk}, {lens} FROM {q(t.name)} WHERE {cond}"
            if not opts.ignore_errors:
                sql += f" LIMIT {MAX_NAMED}"
            for row in c.exec_driver_sql(sql):
                key = shown("/".join(str(v) for v in row[: len(t.pk)]))
                for (col, n), length in zip(limits.items(), row[len(t.pk) :]):
                    if length is not None and length > n:
                        found.append(f"{t.name} {'/'.join(t.pk)}={key} column {col}: {length} characters, the target holds {n}")
    _refuse_unless_ignored(found, opts=opts, what="values too long for the mysql target", fix="Shorten them at the source")
    plan.oversized = found


def _check_nuls(plan: Plan, *, opts: RunOptions) -> None:
    """Text holding a NUL character, which postgres cannot store: refused, or skipped row by row."""
    sd = plan.src_driver
    q = lambda n: dialects.quote(sd, n)  # noqa: E731
    has_nul = (lambda col: f"instr({q(col)}, char(0)) > 0") if sd == "sqlite3" else (lambda col: f"LOCATE(CHAR(0), {q(col)}) > 0")
    found: list[str] = []
    with plan.src_engine.connect() as c:
        for t in plan.tables:
            cols = [col.name for col in t.columns if col.kind == V.KIND_TEXT]
            if not cols or not t.pk:
                continue
            pk = ", ".join(q(k) for k in t.pk)
            flags = ", ".join(has_nul(col) for col in cols)
            where = " OR ".join(has_nul(col) for col in cols)  # one scan of the table for all its columns
            sql = f"SELECT {pk}, {flags} FROM {q(t.name)} WHERE {where}"
            for row in c.exec_driver_sql(sql):
                key = shown("/".join(map(str, row[: len(t.pk)])))
                for col, flag in zip(cols, row[len(t.pk) :]):
                    if flag:
                        plan.nul_columns.add((t.name, col))
                        found.append(f"{t.name} {'/'.join(t.pk)}={key} column {col}")
    _refuse_unless_ignored(found, opts=opts, what="text holding a NUL character, which postgres cannot store", fix="Clean it at the source")


def _refuse_unless_ignored(found: list[str], *, opts: RunOptions, what: str, fix: str) -> None:
    """Rows the target cannot store: ConfigError naming the first of them, unless --ignore-errors skips them."""
    if found and not opts.ignore_errors:
        raise ConfigError(
            f"{what}; nothing written: {'; '.join(found[:MAX_NAMED])}. "
            f"{fix}, or pass --ignore-errors to skip those rows (listed in the report)"
        )


# -- run ---------------------------------------------------------------------


class _BadRow(Exception):
    def __init__(self, item: str, message: str) -> None:
        super().__init__(message)
        self.item = item
        self.message = message


def _item(t: TablePlan, row: Sequence[Any], names: Sequence[str]) -> str:
    if not t.pk:
        return f"{t.name}:(no primary key)"
    idx = [names.index(k) for k in t.pk]
    return f"{t.name}:" + "/".join(str(row[i]) for i in idx)


def _select(t: TablePlan, driver: str, *, where_orphans: bool, by_key: bool = False) -> str:
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


def _orphans(reader: dialects.SnapshotReader, t: TablePlan) -> list[tuple[str, str]]:
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


def _converters(plan: Plan, t: TablePlan) -> tuple[list[tuple[int, Any]], list[tuple[int, int]]]:
    """(column index, value function) for columns that change on the way; (index, max characters) to check."""
    limits = _target_limits(plan, t)
    convs, checks = [], []
    for i, c in enumerate(t.columns):
        fsp = V.time_fsp(plan.dst_driver, c.dst_type) if c.dst_type is not None else 9
        if c.name in limits:
            checks.append((i, limits[c.name]))
        if c.kind == V.KIND_TEXT:
            if (t.name, c.name) in plan.nul_columns:
                convs.append((i, _no_nul))
            continue  # text passes as is; its length is checked inline
        f = V.column_converter(
            kind=c.kind,
            src=plan.src_driver,
            dst=plan.dst_driver,
            src_zone=plan.src_zone,
            dst_zone=plan.dst_zone,
            dst_fsp=fsp,
        )
        if f is not None:
            convs.append((i, f))
    return convs, checks


@dataclass
class _TableResult:
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
    res: _TableResult,
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
    convs, checks = _converters(plan, t)
    add_keys = keyring.row_fixer(names) if keyring is not None and t.name == "files" else None
    # Children of rows skipped for a bad value: skipped too, or the target's foreign key breaks.
    parent_skips = [(names.index(col), skipped_keys[parent]) for col, parent, _ in t.fks if skipped_keys.get(parent)]
    keep_keys = len(t.pk) == 1 and any(fk[1] == t.name for other in plan.tables for fk in other.fks)
    pk_index = names.index(t.pk[0]) if t.pk else 0
    mine: set = set()
    collide = plan.collisions.get(t.name)
    key_at = [names.index(k) for k in t.pk]
    fast = _row_function(convs, checks, len(names)) if (convs or checks) and not parent_skips else None

    replace = not fresh and not t.pk
    if replace:
        writer.execute(f"DELETE FROM {writer.q(t.name)}").close()
    sink = writer.sink(t.name, names, t.pk, upsert=not fresh and bool(t.pk), text_only=t.known)
    changed = 0
    # InnoDB clusters rows by primary key: in key order a fresh table grows at its end, instead of
    # touching random pages of a table larger than the buffer pool (the server's time at a million rows).
    by_key = fresh and plan.dst_driver == "mysql"
    sql = _select(t, plan.src_driver, where_orphans=res.orphans > 0, by_key=by_key)
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
                            out.append(_convert(row, convs, checks, parent_skips, names, t, raw_to))
                        except _BadRow as bad:
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
        abort = getattr(sink, "abort", None)
        if abort is not None:
            abort(exc)
        raise
    if n is not None:
        changed += n
    res.changed = None if (fresh or plan.dst_driver == "mysql") else changed
    if mine:
        skipped_keys[t.name] = mine


def _no_nul(value: Any) -> Any:
    if value.__class__ is str and "\x00" in value:
        raise V.ValueError_("holds a NUL character, which postgres text cannot store")
    return value


def _too_long(value: Any, limit: int) -> Any:
    raise V.ValueError_(f"{len(value)} characters do not fit the target's {limit}")


def _row_function(convs: list[tuple[int, Any]], checks: list[tuple[int, int]], width: int) -> Any:
    """One compiled function converting a whole row: no per-column loop, length checks inline."""
    env: dict[str, Any] = {f"f{i}": f for i, f in convs}
    env["too_long"] = _too_long
    limits = dict(checks)
    parts = []
    for i in range(width):
        x = f"f{i}(r[{i}])" if f"f{i}" in env else f"r[{i}]"
        if i in limits:
            n = limits[i]
            x = f"(v if (v := {x}).__class__ is not str or len(v) <= {n} else too_long(v, {n}))"
        parts.append(x)
    code = f"def row(r):\n    return ({', '.join(parts)},)\n"
    exec(compile(code, "<pmigrate row converter>", "exec"), env)  # noqa: S102 - built from column indexes only
    return env["row"]


def _convert(
    row: Sequence[Any],
    convs: list[tuple[int, Any]],
    checks: list[tuple[int, int]],
    parent_skips: list[tuple[int, set]],
    names: Sequence[str],
    t: TablePlan,
    raw_to: str | None = None,
) -> tuple:
    """The slow path, row by row: names the table, key and column of a value that cannot go.

    ``raw_to``: the target's driver when the batch holds text that is not
    UTF-8 (RawText, from a sqlite3 source): it goes as it is into sqlite3,
    and stops the row for postgres and mysql, which store UTF-8 only.
    """
    for i, keys in parent_skips:
        if row[i] in keys:
            raise _BadRow(_item(t, row, names), f"{names[i]} {shown(row[i])} names a row skipped above")
    if raw_to not in (None, "sqlite3"):
        for i, v in enumerate(row):
            if v.__class__ is RawText:
                raise _BadRow(
                    _item(t, row, names),
                    f"column {names[i]}: text that is not valid UTF-8 ({shown(v)}), which {raw_to} cannot store",
                )
    r = list(row)
    for i, f in convs:
        if raw_to is not None and r[i].__class__ is RawText:
            continue  # into sqlite3 as it is
        try:
            r[i] = f(r[i])
        except (V.ValueError_, ValueError, TypeError, OverflowError) as exc:
            raise _BadRow(_item(t, row, names), f"column {names[i]}: {exc}") from None
    for i, n in checks:
        v = r[i]
        if v.__class__ is str and len(v) > n:
            raise _BadRow(_item(t, row, names), f"column {names[i]}: {len(v)} characters do not fit the target's {n}")
    return tuple(r)


def _gone(plan: Plan, t: TablePlan, reader: dialects.SnapshotReader, writer: dialects.TargetWriter, *, opts: RunOptions, delete: bool) -> int:
    """On a re-run: target rows whose key the source no longer has (plikd purged them); deleted with ``delete``."""
    kinds = {c.name: c.kind for c in t.columns}

    step = 1000 if "mysql" in (plan.src_driver, plan.dst_driver) else 1  # datetime(3): compare at ms

    def coarse(v: Any) -> Any:
        return v.replace(microsecond=v.microsecond - v.microsecond % step) if isinstance(v, datetime) else v

    def canon(row: Sequence[Any], driver: str, zone: tzinfo) -> tuple:
        return tuple(coarse(V.canonical(v, kind=kinds[k], driver=driver, zone=zone)) for v, k in zip(row, t.pk))

    sql = _select(TablePlan(t.name, [Column(k, kinds[k], None) for k in t.pk], t.pk, t.known, t.fks), plan.src_driver, where_orphans=True)
    source: set = set()
    for batch in reader.stream(sql, batch=opts.batch_size):
        source.update(canon(r, plan.src_driver, plan.src_zone) for r in batch)
    gone = []
    for batch in writer.keys(t.name, t.pk, batch=opts.batch_size):
        gone.extend(r for r in batch if canon(r, plan.dst_driver, plan.dst_zone) not in source)
    if delete:
        for chunk in dialects.chunks(gone, opts.batch_size):
            writer.delete(t.name, t.pk, chunk)
    return len(gone)


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
    results = {t.name: _TableResult() for t in plan.tables}
    reader = None
    loaded = False
    try:
        reader = dialects.SnapshotReader(plan.src_engine, plan.src_driver)
        reader.begin()
        skipped_counts = {name: reader.count(name) for name in plan.skipped_tables}
        for t in plan.tables:
            res = results[t.name]
            res.source = reader.count(t.name)
            for item, message in _orphans(reader, t):
                res.orphans += 1
                report.problem(area=AREA, kind="orphan", item=item, message=message, fatal=False)
        if opts.dry_run:
            _dry_report(plan, results, skipped_counts, opts=opts, report=report)
            return
        keyring = _keyring(plan)
        if plan.state != "empty":  # which rows differ on the target: only those are written
            plan.changes = mdelta.plan_changes(plan, batch_size=opts.batch_size, fixes={"files": keyring.row_fixer} if keyring else None)
        _load(plan, reader, results, opts=opts, report=report, keyring=keyring)
        if keyring is not None:
            sec["sse_keys_made"] = keyring.made
            report.line(AREA, f"SSE-C keys made by pmigrate for {keyring.made} file(s) without one, in backend_details "
                              "(the blob copy encrypts with the same keys)")  # fmt: skip
        loaded = True
        reader.close()
        _prove(plan, results, skipped_counts, started=started, report=report)
    except BaseException as exc:
        fault = exc if isinstance(exc, faults.DatabaseFault) else None
        if fault is None and not isinstance(exc, PmigrateError):  # _load names its own failures
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
    from pmigrate.transfer.journal import Journal

    path, identity = plan.keys_journal
    journal = Journal.open(path, identity=identity)
    try:
        return ssekeys.keyring(journal, create=True)
    finally:
        journal.close()


def _dry_report(plan: Plan, results: dict[str, _TableResult], skipped_counts: dict[str, int], *, opts: RunOptions, report: Report) -> None:
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
    from pmigrate.verify import rows

    src = rows.Side(engine=plan.src_engine, driver=plan.src_driver, naive_tz=plan.src_zone)
    dst = rows.Side(engine=plan.dst_engine, driver=plan.dst_driver, naive_tz=plan.dst_zone)
    plans, _problems = rows.plan_tables(src, dst)
    wanted = {t.name for t in plan.tables}
    out = {}
    for tp in plans:
        if tp.name in wanted:
            res = rows.audit_table(tp, src, dst, batch_size=opts.batch_size)
            out[tp.name] = (res.missing, res.changed, res.extra)
    return out


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


def _load(
    plan: Plan,
    reader: dialects.SnapshotReader,
    results: dict[str, _TableResult],
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
        dst = _reflect(conn, plan.dst_driver, [name(t.name) for t in missing], keys=False)
        for t in missing:
            _attach_target(t, dst[name(t.name)]["columns"], plan.dst_driver, fatal=FatalError)


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


def _prove(plan: Plan, results: dict[str, _TableResult], skipped_counts: dict[str, int], *, started: float, report: Report) -> None:
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
