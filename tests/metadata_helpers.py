"""Helpers for the metadata tests: configs for test databases, and row-by-row comparison.

Rows are compared in a canonical Python form: bool, aware UTC datetime
truncated to the coarser precision of the two sides, str, int, None.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pmigrate import config
from pmigrate.metadata import values as V
from pmigrate.metadata.dialects import quote
from pmigrate.options import RunOptions
from pmigrate.ownership import OWNER_TABLE
from pmigrate.report import Report
from tests.servers import Database

# Fractional digits each driver keeps for a timestamp (sqlite's ns reach Python as µs).
FSP = {"sqlite3": 6, "postgres": 6, "mysql": 3}


def write_cfg(db: Database, path: Path) -> Path:
    path.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{path.parent / (path.stem + "-files")}"\n' + db.toml())
    return path


def load_cfg(db: Database, path: Path) -> config.PlikConfig:
    return config.load(write_cfg(db, path))


def migrate(src: Database, dst: Database, tmp: Path, **opts: Any) -> Report:
    """preflight + run of the metadata stage, as migrate.py chains them."""
    from pmigrate.metadata import copier

    tmp.mkdir(parents=True, exist_ok=True)
    s = load_cfg(src, tmp / "src.cfg")
    d = load_cfg(dst, tmp / "dst.cfg")
    options = RunOptions(data=False, quiet=True, **opts)
    plan = copier.preflight(s, d, opts=options)
    report = Report("migrate")
    try:
        copier.run(plan, opts=options, report=report)
    finally:
        plan.src_engine.dispose()
        plan.dst_engine.dispose()
    return report


def engine(db: Database) -> sa.Engine:
    return sa.create_engine(db.url)


def _truncate(v: Any, digits: int) -> Any:
    if isinstance(v, datetime):
        step = 10 ** (6 - digits)
        return v.replace(microsecond=v.microsecond - v.microsecond % step)
    return v


def table_rows(db: Database, *, digits: int, skip: tuple[str, ...] = ()) -> dict[str, dict[tuple, tuple]]:
    """table -> {primary key: canonical row}, for every table of a database."""
    zone = V.UTC if db.driver != "mysql" else V.local_zone()
    eng = engine(db)
    out: dict[str, dict[tuple, tuple]] = {}
    try:
        with eng.connect() as c:
            insp = sa.inspect(c)
            for t in insp.get_table_names():
                if t in skip or t == OWNER_TABLE:  # pmigrate's record of whose the target is, not Plik's data
                    continue
                cols = insp.get_columns(t)
                kinds = [V.column_kind(db.driver, col["type"]) for col in cols]
                names = [col["name"] for col in cols]
                pk = insp.get_pk_constraint(t)["constrained_columns"] or names
                raw = c.connection.driver_connection
                cur = raw.cursor()
                cur.execute(f"SELECT {', '.join(quote(db.driver, n) for n in names)} FROM {quote(db.driver, t)}")
                rows = {}
                for r in cur.fetchall():
                    canon = {
                        n: _truncate(V.canonical(v, kind=k, driver=db.driver, zone=zone), digits)
                        for n, v, k in zip(names, r, kinds)
                    }
                    rows[tuple(canon[k] for k in pk)] = tuple(sorted(canon.items()))
                cur.close()
                out[t] = rows
    finally:
        eng.dispose()
    return out


def assert_same_rows(
    a: Database, b: Database, *, skip: tuple[str, ...] = ("cli_auth_sessions",), digits: int | None = None
) -> None:
    """Every table, every row equal in canonical form (timestamps at the coarser precision)."""
    if digits is None:
        digits = min(FSP[a.driver], FSP[b.driver])
    left = table_rows(a, digits=digits, skip=skip)
    right = table_rows(b, digits=digits, skip=skip)
    assert sorted(left) == sorted(right), "tables differ"
    for t in left:
        assert left[t] == right[t], f"rows of {t} differ"


def counts(report: Report) -> dict[str, tuple[int, int]]:
    tables = report.sections["metadata"]["tables"]
    return {t: (v["source"], v["target"]) for t, v in tables.items()}
