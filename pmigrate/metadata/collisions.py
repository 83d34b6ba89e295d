"""Keys that a mysql target takes for one key, found before anything is written.

MySQL's and MariaDB's default collations compare strings regardless of case,
accents and trailing spaces: ``CaseCollideAbCdE`` and ``casecollideabcde``,
two keys in a sqlite3 or postgres source, are one key on such a target. A
first load would fail on the duplicate; a merge's upsert would write one
key's values into the other key's row. So every primary key with a string
column is checked with the target's own collation, on the first pass and on
every re-run: the source's keys stream into a temporary table on the target
(typed and collated like the target's key columns, gone with the session,
nothing written), and the server groups them, and joins them with the keys
the target already holds. Memory stays flat whatever the table size; only
the colliding keys come back.

In each group of colliding keys the row the target already holds from this
same key is kept; a target row whose key the source no longer has is never
overwritten (every colliding source row is left out); on a first pass the
first key in code-point order is kept. The others are refused with exit 2,
or, with --ignore-errors, skipped and listed, and their children (the files
of a skipped upload) with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import xxhash

from pmigrate.errors import ConfigError
from pmigrate.metadata import dialects
from pmigrate.metadata import values as V
from pmigrate.metadata.convert import column_converter
from pmigrate.options import RunOptions

TEMP = "pmigrate_keys"
# Collations that tell every two strings apart: nothing can collide there.
_EXACT = re.compile(r"^binary$|_nopad_bin$|_0900_bin$")
# Bytes of an InnoDB index key; utf8mb4 takes up to 4 bytes a character.
_INDEX_BYTES = 3072
# Characters of a key column compared: longer keys (Plik's hold 256) are left out of the check.
_MAX_CHARS = _INDEX_BYTES // 4
# Characters of a key as read (repr), kept for the few rows whose strings do not say it all.
_MAX_RAW = 4000
# Collisions named in a refusal.
MAX_NAMED = 5
# Server errors for a privilege the user lacks.
_DENIED = (1044, 1142, 1227)


@dataclass(frozen=True)
class Skip:
    """A source row the copy leaves out, and why (for the report)."""

    item: str  # table:key, as the copier names rows
    message: str


def key_of(row: Sequence[Any], at: Sequence[int]) -> str:
    """The identity of a source row's key, as check() records it: exact, whatever the types."""
    return repr(tuple(row[i] for i in at))


def drop(rows: Sequence[Any], skips: dict[str, Skip], at: Sequence[int]) -> tuple[list, list[tuple[Any, Skip]]]:
    """(rows kept, (row, Skip) left out) of one batch of source rows."""
    kept, dropped = [], []
    for row in rows:
        skip = skips.get(key_of(row, at))
        if skip is None:
            kept.append(row)
        else:
            dropped.append((row, skip))
    return kept, dropped


@dataclass
class _Key:
    """What the temporary table holds for one key column."""

    name: str
    text: bool  # compared with the target's collation
    ddl: str  # column type for the temporary table (text columns)
    limit: int  # characters the target column holds (text columns)
    kind: str  # values.KIND_* (other columns)
    convert: Any = None  # source value -> target value (other columns)


def check(plan: Any, *, opts: RunOptions) -> dict[str, dict[str, Skip]]:
    """table -> {source key: Skip}; ConfigError naming the colliding keys unless --ignore-errors."""
    if plan.dst_driver != "mysql":
        return {}
    found: dict[str, dict[str, Skip]] = {}
    named: list[str] = []
    import pymysql

    proxy, conn = dialects.raw_connection(plan.dst_engine)
    reader = dialects.SnapshotReader(plan.src_engine, plan.src_driver)
    try:
        reader.begin()
        for t in plan.tables:
            keys = _key_columns(plan, t, conn)
            if keys is None:
                continue
            skips, lines = _check_table(plan, t, keys, reader, conn, batch=opts.batch_size)
            if skips:
                found[t.name] = skips
                named.extend(lines)
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] in _DENIED:
            raise ConfigError(
                f"the mysql target's user may not create temporary tables ({exc.args[1]}), which pmigrate needs to "
                "compare the source's keys in the target's collation: GRANT CREATE TEMPORARY TABLES on the target database"
            ) from None
        raise
    finally:
        reader.close()
        try:
            _drop_temp(conn)
            conn.rollback()
        finally:
            proxy.close()
    if named and not opts.ignore_errors:
        raise ConfigError(
            "keys that differ only in case, accents or trailing spaces are one key in the mysql target; "
            f"nothing written: {'; '.join(named[:MAX_NAMED])}{' ...' if len(named) > MAX_NAMED else ''}. "
            "Rename one of each at the source, or pass --ignore-errors to skip the rows that would collide "
            "(listed in the report; a target row is never overwritten with another key's values)"
        )
    return found


# -- the key columns and their target types -------------------------------------


def _key_columns(plan: Any, t: Any, conn: Any) -> list[_Key] | None:
    """The primary key's columns as the target has (or will have) them; None: nothing can collide."""
    if not t.pk:
        return None
    by_name = {c.name: c for c in t.columns}
    if any(k not in by_name for k in t.pk):
        return None
    declared = _declared(t, conn)
    keys = []
    for name in t.pk:
        c = by_name[name]
        ddl = declared.get(name)
        if ddl is not None:
            limit = min(ddl[1], _MAX_CHARS)
            keys.append(_Key(name, True, f"VARCHAR({limit}){ddl[0]}", limit, c.kind))
            continue
        fsp = V.time_fsp("mysql", c.dst_type) if c.dst_type is not None else 3
        conv = column_converter(
            kind=c.kind, src=plan.src_driver, dst="mysql", src_zone=plan.src_zone, dst_zone=plan.dst_zone, dst_fsp=fsp
        )
        keys.append(_Key(name, False, "", 0, c.kind, conv))
    if not any(k.text for k in keys):
        return None
    return keys


def _declared(t: Any, conn: Any) -> dict[str, tuple[str, int]]:
    """Text key columns -> (charset and collation clause, characters), from the target or its plan.

    A re-run reads them from the target's table; a fresh target gets the
    planned types with no collation clause: the temporary table, like Plik's
    DDL, says DEFAULT CHARSET=utf8mb4 and so gets the same collation.
    """
    if t.dst_types is not None:
        rows = _all(
            conn,
            "SELECT COLUMN_NAME, CHARACTER_MAXIMUM_LENGTH, CHARACTER_SET_NAME, COLLATION_NAME "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (t.name,),
        )
        return {
            name: (f" CHARACTER SET {cs} COLLATE {coll}", int(length))
            for name, length, cs, coll in rows
            if name in t.pk and coll is not None and not _EXACT.search(coll)
        }
    import sqlalchemy as sa

    out = {}
    for name in t.pk:
        ty = t.planned_types.get(name)
        if isinstance(ty, sa.String):
            out[name] = ("", int(getattr(ty, "length", None) or 256))
    return out


# -- one table --------------------------------------------------------------------


@dataclass
class _Table:
    """The temporary table of one table's keys, and how to read a source key back from it."""

    keys: list[_Key]
    texts: list[_Key]
    other: bool  # non-text key columns: compared through the digest x

    @property
    def s(self) -> list[str]:
        return [f"s{i}" for i in range(len(self.texts))]

    @property
    def key(self) -> list[str]:
        """The columns that hold a key as the target compares it."""
        return self.s + (["x"] if self.other else [])

    def cols(self, alias: str) -> str:
        return ", ".join(f"{alias}.{c}" for c in self.key)

    def same(self, a: str, b: str) -> str:
        """Rows a and b of temporary tables hold one key in the target's collation."""
        return " AND ".join(f"{a}.{c} <=> {b}.{c}" for c in self.key)


def _check_table(plan: Any, t: Any, keys: list[_Key], reader: Any, conn: Any, *, batch: int) -> tuple[dict[str, Skip], list[str]]:
    _drop_temp(conn)
    tt = _Table(keys, [k for k in keys if k.text], any(not k.text for k in keys))
    cols = ", ".join(f"{c} {k.ddl} NULL" for c, k in zip(tt.s, tt.texts))
    # raw and label: '' when the text columns say it all (a key of strings only, the usual case).
    # The index grows with the load: at a million keys this took half the time of a sorted build
    # afterwards (ALTER TABLE copies the table), and a third of a GROUP BY without an index.
    _run(
        conn,
        f"CREATE TEMPORARY TABLE {TEMP} ({cols}{', x VARBINARY(32) NULL' if tt.other else ''}, "
        f"raw VARCHAR({_MAX_RAW}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, "
        f"label VARCHAR({_MAX_RAW}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, "
        f"KEY ({_indexed(tt)})) DEFAULT CHARSET=utf8mb4",
    )
    found = _all(conn, f"SHOW FULL COLUMNS FROM {TEMP} LIKE 's%'")
    if all(_EXACT.search(c[2] or "binary") for c in found):
        return {}, []
    collation = found[0][2]
    _load(plan, t, tt, reader, conn, batch=batch)
    groups = _groups(conn, tt)
    if t.dst_types is not None:
        _attach_target(plan, t, tt, conn, groups)
    return _resolve(t, groups, collation)


def _indexed(tt: _Table) -> str:
    """The leading key columns that fit in one index (the first one always does)."""
    cols, size = [], 0
    for c, width in [*((c, k.limit * 4) for c, k in zip(tt.s, tt.texts)), *((("x", 32),) if tt.other else ())]:
        if cols and size + width > _INDEX_BYTES:
            break
        cols.append(c)
        size += width
    return ", ".join(cols)


def _source_keys(plan: Any, t: Any, reader: Any, *, batch: int) -> Iterator[list[tuple]]:
    """The source's keys, without orphans (the copy leaves those out)."""
    from pmigrate.metadata.load import select_sql
    from pmigrate.metadata.plan import TablePlan

    cols = {c.name: c for c in t.columns}
    keyed = TablePlan(t.name, [cols[k] for k in t.pk], list(t.pk), t.known, t.fks)
    return reader.stream(select_sql(keyed, plan.src_driver, where_orphans=True), batch=batch)


def _load(plan: Any, t: Any, tt: _Table, reader: Any, conn: Any, *, batch: int) -> None:
    writer = dialects.TargetWriter(conn, "mysql")
    names = [*tt.s, *(["x"] if tt.other else []), "raw", "label"]
    sink = writer.sink(TEMP, names, [], upsert=False, text_only=True)
    limit = min(k.limit for k in tt.texts)
    try:
        for rows in _source_keys(plan, t, reader, batch=batch):
            if tt.other:
                out = [e for e in (_entry(row, tt.keys, plan.dst_zone) for row in rows) if e is not None]
            elif len(tt.keys) == 1:  # most rows by far (files, uploads): one string, checked inline
                out = [
                    (v, "", "")
                    if (v := row[0]).__class__ is str and len(v) <= limit and (v.isascii() or _encodable(v))
                    else _entry(row, tt.keys, plan.dst_zone)
                    for row in rows
                ]
                out = [e for e in out if e is not None]
            else:
                out = [
                    (*row, "", "")
                    if all(v.__class__ is str and len(v) <= limit and (v.isascii() or _encodable(v)) for v in row)
                    else _entry(row, tt.keys, plan.dst_zone)
                    for row in rows
                ]
                out = [e for e in out if e is not None]
            sink.write(out)
        sink.close()
    except BaseException as exc:
        sink.abort(exc)
        raise


def _entry(row: Sequence[Any], keys: list[_Key], zone: Any) -> tuple | None:
    """One temporary row: text columns as the target gets them, the others as one digest, the key as read.

    None for a key the target cannot hold at all (too long, not text): the
    copy refuses or skips it on its own.
    """
    texts: list[Any] = []
    others: list[Any] = []
    for k, v in zip(keys, row):
        if k.text:
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    return None
            elif v is not None and not isinstance(v, str):
                v = str(v)
            if v is not None and (len(v) > k.limit or not _encodable(v)):
                return None
            texts.append(v)
        else:
            try:
                others.append(_canon(k.convert(v) if k.convert else v, k.kind, zone))
            except Exception:  # noqa: BLE001 - a value the copy itself refuses or skips
                return None
    raw, label = repr(tuple(row)), _label(row)
    if len(raw) > _MAX_RAW or len(label) > _MAX_RAW:
        return None
    return (*texts, *([_digest(others)] if others else []), raw, label)


def _encodable(v: str) -> bool:
    try:
        v.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _canon(v: Any, kind: str, zone: Any) -> Any:
    """A non-text key value as the target compares it (datetime(3): milliseconds)."""
    v = V.canonical(v, kind=kind, driver="mysql", zone=zone)
    if isinstance(v, datetime):
        v = v.replace(microsecond=v.microsecond - v.microsecond % 1000)
    return v


def _digest(values: Sequence[Any]) -> str:
    return xxhash.xxh3_128_hexdigest(repr(tuple(values)).encode("utf-8", "backslashreplace"))


def _label(values: Sequence[Any]) -> str:
    text = "/".join(str(v) for v in values)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _identity(raw: str, label: str, texts: Sequence[Any]) -> tuple[str, str]:
    """(source key, label) of a temporary row; '' means: the strings themselves."""
    return (raw or repr(tuple(texts)), label or _label(texts))


# -- what the server finds ------------------------------------------------------------


@dataclass
class _Group:
    """Source keys that are one key on the target, with the target row they meet, if any."""

    members: list[tuple[str, str]]  # (source key, label)
    target: str | None = None  # label of the target's row
    target_key: str | None = None  # that row's source key, when the source still has it


def _groups(conn: Any, tt: _Table) -> dict[str, _Group]:
    """Source keys that collide with each other: source key -> its group.

    MySQL cannot open a temporary table twice in one statement: the groups go
    to a second, small one first.
    """
    g = ", ".join(tt.key)
    _run(conn, f"CREATE TEMPORARY TABLE {TEMP}_g AS SELECT {g} FROM {TEMP} GROUP BY {g} HAVING COUNT(*) > 1")
    n = len(tt.key)
    sql = f"SELECT {tt.cols('g')}, {', '.join(f'a.{c}' for c in tt.s)}, a.raw, a.label FROM {TEMP} a JOIN {TEMP}_g g ON {tt.same('a', 'g')}"
    by_group: dict[tuple, _Group] = {}
    out: dict[str, _Group] = {}
    for row in _all(conn, sql):
        group = by_group.setdefault(tuple(row[:n]), _Group([]))
        member = _identity(row[-2], row[-1], row[n:-2])
        group.members.append(member)
        out[member[0]] = group
    return out


def _attach_target(plan: Any, t: Any, tt: _Table, conn: Any, groups: dict[str, _Group]) -> None:
    """Source keys one key with a target row of another spelling: that row joins their group."""
    q = lambda n: dialects.quote("mysql", n)  # noqa: E731
    keys = tt.keys
    on = " AND ".join(f"t.{q(k.name)} = a.{c}" for c, k in zip(tt.s, tt.texts))
    same = " AND ".join(f"CAST(t.{q(k.name)} AS BINARY) <=> CAST(a.{c} AS BINARY)" for c, k in zip(tt.s, tt.texts))
    cols = ", ".join(f"t.{q(k.name)} AS k{j}" for j, k in enumerate(keys))
    a = ", ".join(f"a.{c} AS {c}" for c in tt.s) + (", a.x AS x" if tt.other else "")
    # The target's keys drive: a scan of its narrowest index, each key looked up in the temporary
    # table's, which stays in memory. The other way round (a lookup per source key into a target
    # table larger than the buffer pool) took six times as long at a million files.
    _run(
        conn,
        f"CREATE TEMPORARY TABLE {TEMP}_t AS SELECT {a}, a.raw AS raw, a.label AS label, {cols} "
        f"FROM {q(t.name)} t STRAIGHT_JOIN {TEMP} a ON {on} WHERE NOT ({same})",
    )
    at = {k.name: j for j, k in enumerate(keys)}
    back = " AND ".join(
        f"b.{c} = c.k{at[k.name]} AND CAST(b.{c} AS BINARY) = CAST(c.k{at[k.name]} AS BINARY)" for c, k in zip(tt.s, tt.texts)
    )
    if tt.other:
        back += " AND b.x <=> c.x"
    n = len(tt.s)
    sql = (
        f"SELECT {', '.join(f'c.{c}' for c in tt.s)}, c.raw, c.label, {', '.join(f'b.{c}' for c in tt.s)}, b.raw, b.label, "
        f"{'c.x' if tt.other else 'NULL'}, {', '.join(f'c.k{j}' for j in range(len(keys)))} "
        f"FROM {TEMP}_t c LEFT JOIN {TEMP} b ON {back}"
    )
    for row in _all(conn, sql):
        mine, theirs = row[: n + 2], row[n + 2 : 2 * n + 4]
        x, target = row[2 * n + 4], row[2 * n + 5 :]
        if tt.other:
            others = [_canon(v, k.kind, plan.dst_zone) for k, v in zip(keys, target) if not k.text]
            if _digest(others) != (x.decode() if isinstance(x, bytes) else x):
                continue  # the same text, another day (or other non-text column): another key
        raw, label = _identity(mine[-2], mine[-1], mine[:-2])
        group = groups.get(raw)
        if group is None:
            group = groups[raw] = _Group([(raw, label)])
        group.target = _label(target)
        group.target_key = None if theirs[-2] is None else _identity(theirs[-2], theirs[-1], theirs[:-2])[0]


def _resolve(t: Any, groups: dict[str, _Group], collation: str) -> tuple[dict[str, Skip], list[str]]:
    """Which rows are left out, and one line per collision for a refusal."""
    skips: dict[str, Skip] = {}
    lines = []
    seen: set[int] = set()
    what = f"{t.name} {'/'.join(t.pk)}"
    for group in groups.values():
        if id(group) in seen:
            continue
        seen.add(id(group))
        members = sorted(group.members, key=lambda m: m[1])
        if group.target is not None:
            keep = group.target_key
            where = "already in the target" if keep is not None else "in the target, gone from the source"
            other = f"{group.target} ({where})"
            left = "row skipped; the target row is left as it is"
            names = [label for raw, label in members if raw != keep] + [other]
        else:
            keep = members[0][0]
            other = f"{members[0][1]} (copied)"
            left = "row skipped"
            names = [label for _, label in members]
        lines.append(f"{what} {' and '.join(names)} (collation {collation})")
        for raw, label in members:
            if raw != keep:
                skips[raw] = Skip(f"{t.name}:{label}", f"one key with {other} in the target's collation {collation}: {left}")
    return skips, lines


# -- the target connection ---------------------------------------------------------------


def _drop_temp(conn: Any) -> None:
    _run(conn, f"DROP TEMPORARY TABLE IF EXISTS {TEMP}, {TEMP}_g, {TEMP}_t")


def _run(conn: Any, sql: str, params: Sequence[Any] | None = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)


def _all(conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())
