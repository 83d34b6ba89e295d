"""The metadata stage's plan: what the source holds and what the target will get.

preflight() reflects both sides, matches their columns and runs the checks
of prechecks.py; it writes nothing. The Plan it returns is all the load needs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

import sqlalchemy as sa

from pmigrate import ownership
from pmigrate.data import ssekeys
from pmigrate.errors import ConfigError
from pmigrate.metadata import collisions, grants, lockwait, staging
from pmigrate.metadata import delta as mdelta
from pmigrate.metadata import values as V
from pmigrate.metadata.prechecks import check_lengths, check_nuls, check_owner, keys_journal
from pmigrate.options import RunOptions

AREA = "metadata"
SESSIONS = "cli_auth_sessions"


# Plik's foreign keys (PLIK.md), checked even where a source lacks the constraint.
PLIK_FKS = (("tokens", "user_id", "users", "id"), ("files", "upload_id", "uploads", "id"))


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


def reflect(conn: Any, driver: str, names: Sequence[str], *, keys: bool = True) -> dict[str, dict[str, Any]]:
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
        refl = reflect(c, sd, names)
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
            dst_refl = reflect(c, dd, [t for t in names if t in have]) if state == "same-level" else {}
            if state == "same-level":
                owner = ownership.metadata_state(c, source=source_identity, tables=sorted(have & set(names)))
    check_owner(owner, dst.metadata.describe(), source_identity, opts=opts)

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
            attach_target(plan_t, dst_refl[t]["columns"], dd, fatal=ConfigError)
        elif dd == "mysql":
            plan_t.planned_types = planned.get(t) or mysql_ddl_types(level).get(t, {})
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
        src_zone=V.zone_of(src.metadata),
        dst_zone=V.zone_of(dst.metadata),
        source_identity=source_identity,
        owner=owner,
        leftovers=leftovers,
        watches=watches,
    )
    if ssekeys.needed(src, dst):
        plan.keys_journal = keys_journal(plan, dst, opts=opts)
    plan.dst_schema = grants.check(plan, dst.metadata, opts=opts)  # before the source's scans below
    if dd == "mysql":
        check_lengths(plan, opts=opts)
        plan.collisions = collisions.check(plan, opts=opts)
    if dd == "postgres" and sd != "postgres":
        check_nuls(plan, opts=opts)
    return plan


def attach_target(t: TablePlan, dst_columns: Sequence[tuple[str, Any]], driver: str, *, fatal: type[Exception]) -> None:
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


def _unknown_types(conn: Any, table: str, driver: str) -> dict[str, Any]:
    from pmigrate.metadata import schema

    return {c.name: c.type for c in schema.reflect_unknown_table(conn, table, driver=driver).columns}


_CREATE = re.compile(r"CREATE TABLE `(\w+)` \((.*?)\n\)", re.S)


_VARCHAR = re.compile(r"^\s*`(\w+)` (?:varchar|char)\((\d+)\)", re.M)


@functools.cache
def mysql_ddl_types(level: str) -> dict[str, dict[str, Any]]:
    """Bounded string columns of Plik's mysql tables at a level, read from the DDL the target will get."""
    from sqlalchemy.dialects.mysql import VARCHAR

    from pmigrate.metadata import schema

    text = "\n".join(schema.ddl(driver="mysql", level=level))
    return {
        m.group(1): {c: VARCHAR(int(n)) for c, n in _VARCHAR.findall(m.group(2))}
        for m in _CREATE.finditer(text)
    }
