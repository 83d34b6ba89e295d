"""The rows of a table that differ between two sqlite3 databases, found by SQLite itself.

A re-run into a sqlite3 target compares every row of every table with the
source (compare.differences()); in Python that is seconds per hundred
thousand rows even when nothing changed. Here the target is attached,
read-only, to a connection on the source, and SQLite joins both tables on
their primary key in C, returning only the rows missing on one side or
differing as read: a column compared with ``+a IS +b COLLATE BINARY`` (no
affinity, no collation of the schema) is equal only where Python finds the
two values as read equal too. Those rows then go through the same merge as
everywhere (compare._merge: canonical values, so that one instant written
in two text forms is not a change), and the rows SQLite found equal are
counted as equal, exactly as the merge would have counted them.

Only where SQLite's key order and equality are Python's: the declared
primary key on both sides is the one compared, and its values are all
UTF-8 text or all integers. Anywhere else, None: the caller compares in
Python as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from urllib.parse import quote

from pmigrate.metadata import compare, rawtext

ALIAS = "pmigrate_target"


def _file(side: compare.Side) -> str | None:
    """The database file behind a sqlite3 engine, None for one in memory."""
    with side.engine.connect() as conn:
        for _seq, name, path in conn.exec_driver_sql("PRAGMA database_list").fetchall():
            if name == "main":
                return path or None
    return None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pk(db: sqlite3.Connection, schema: str, table: str) -> list[str]:
    rows = db.execute(f"PRAGMA {schema}.table_info({_q(table)})").fetchall()
    return [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]


def _clean_keys(db: sqlite3.Connection, table: str, columns: list[str]) -> bool:
    """Each key column all UTF-8 text or all integers on both sides: ordered and equal alike in SQLite and Python.

    UTF-8's byte order is the code points' order. Text not ASCII is handed to
    a Python function, which sqlite3 decodes as UTF-8: text that does not
    decode (plikd stores Go's bytes as they are) fails the query, and the
    comparison is left to Python.
    """
    db.create_function("pmigrate_decodes", 1, lambda _text: 0, deterministic=True)
    for c in columns:
        q = _q(c)
        tests = (f"typeof({q}) != 'text' OR ({q} GLOB '*[^ -~]*' AND pmigrate_decodes({q}))", f"typeof({q}) != 'integer'")
        if not any(all(db.execute(f"SELECT 1 FROM {schema}.{_q(table)} WHERE {t} LIMIT 1").fetchone() is None for schema in ("main", ALIAS)) for t in tests):
            return False
    return True


def _stream(db: sqlite3.Connection, sql: str, batch_size: int) -> Iterator[tuple]:
    cur = db.execute(sql)
    try:
        while batch := cur.fetchmany(batch_size):
            yield from batch
    finally:
        cur.close()


def differences(
    plan: compare.TablePlan, src: compare.Side, dst: compare.Side, *, batch_size: int, on_diff: Callable[[str, tuple], None]
) -> compare.TableResult | None:
    """compare.differences() of one table of two sqlite3 databases; None where this way does not apply."""
    if not plan.key or plan.src_fix is not None or src.driver != "sqlite3" or dst.driver != "sqlite3":
        return None
    source, target = _file(src), _file(dst)
    if source is None or target is None:
        return None
    try:
        db = sqlite3.connect(f"file:{quote(source)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        db.text_factory = rawtext.decode
        db.execute("PRAGMA query_only = ON")
        db.execute("ATTACH DATABASE ? AS " + ALIAS, (f"file:{quote(target)}?mode=ro",))
        return _compare(db, plan, batch_size=batch_size, on_diff=on_diff)
    except sqlite3.Error:
        return None
    finally:
        db.close()


def _compare(db: sqlite3.Connection, plan: compare.TablePlan, *, batch_size: int, on_diff: Callable[[str, tuple], None]) -> compare.TableResult | None:
    table = _q(plan.name)
    keys = [plan.columns[i] for i in plan.key]
    if any(_pk(db, schema, plan.name) != keys for schema in ("main", ALIAS)) or not _clean_keys(db, plan.name, keys):
        return None
    s_tbl, t_tbl = f"main.{table}", f"{ALIAS}.{table}"
    on = " AND ".join(f"t.{_q(k)} = s.{_q(k)} COLLATE BINARY" for k in keys)
    same = " AND ".join(f"+s.{_q(c)} IS +t.{_q(c)} COLLATE BINARY" for c in plan.columns)
    missing = f"t.{_q(keys[0])} IS NULL"
    cols = lambda alias: ", ".join(f"{alias}.{_q(c)}" for c in plan.columns)  # noqa: E731
    # "+": the table scanned in storage order and only the rows found sorted, not read through the key's index
    order = lambda alias: ", ".join(f"+{alias}{_q(k)} COLLATE BINARY" for k in keys)  # noqa: E731
    # source rows the target lacks or holds otherwise
    a_sql = f"SELECT {cols('s')} FROM {s_tbl} AS s LEFT JOIN {t_tbl} AS t ON {on} WHERE {missing} OR NOT ({same}) ORDER BY {order('s.')}"
    # target rows that differ, and those the source lacks, in one key order
    b_sql = (
        f"SELECT * FROM (SELECT {cols('t')} FROM {s_tbl} AS s JOIN {t_tbl} AS t ON {on} WHERE NOT ({same})"
        f" UNION ALL SELECT {cols('t')} FROM {t_tbl} AS t WHERE NOT EXISTS (SELECT 1 FROM {s_tbl} AS s WHERE {on}))"
        f" ORDER BY {order('')}"
    )
    n_src = db.execute(f"SELECT count(*) FROM {s_tbl}").fetchone()[0]
    n_dst = db.execute(f"SELECT count(*) FROM {t_tbl}").fetchone()[0]
    res = compare.TableResult(name=plan.name)
    a = compare._keyed_in_order(_stream(db, a_sql, batch_size), plan.key)
    b = compare._keyed_in_order(_stream(db, b_sql, batch_size), plan.key)
    try:
        compare._merge(a, b, plan, res, on_diff, raw=(plan.src_canon, plan.dst_canon))
    except (TypeError, compare._OutOfOrder):
        return None  # not expected with keys checked above: the comparison in Python decides
    finally:
        a.close()
        b.close()
    # Rows SQLite found equal as read: equal in the merge too, counted as it counts them.
    equal = n_src - res.source_rows
    if equal != n_dst - res.target_rows:
        return None  # the two sides changed while read: compare in Python
    res.source_rows += equal
    res.target_rows += equal
    res.ok += equal
    res.as_read = True
    return res
