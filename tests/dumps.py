"""Turn plikd's own dumps (tests/fixtures/plik-dumps) into live databases.

The dumps come from newer clients than this machine's: pg_dump 18 writes
\\restrict lines and SET transaction_timeout, MariaDB 11 a sandbox-mode line
and the utf8mb4_uca1400 collations. Those are stripped or mapped here; the
dumps themselves stay where they are.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from tests.servers import Database, MysqlServer, PostgresServer, sqlite_database

FIXTURE_DUMPS = Path(__file__).resolve().parent / "fixtures" / "plik-dumps"


def dumps_dir() -> Path:
    """The dumps kept in the project, unless PMIGRATE_PLIK_DUMPS names another folder of the same layout."""
    return Path(os.environ.get("PMIGRATE_PLIK_DUMPS") or FIXTURE_DUMPS)


def all_dumps() -> list[Path]:
    d = dumps_dir()
    return sorted(d.glob("*/*.dump")) if d.is_dir() else []


def dump_driver(path: Path) -> str:
    """sqlite3 | postgres | mysql (mariadb dumps load into the mysql driver)."""
    folder = path.parent.name
    return "mysql" if folder in ("mysql", "mariadb") else folder


def dump_level(path: Path) -> str:
    """'0011-stats', 'gorm-v2-1.3.5', ... from the file name."""
    return path.name.rsplit(".", 2)[0]


def clean_postgres(sql: str) -> str:
    out = []
    for line in sql.splitlines():
        if line.startswith("\\restrict") or line.startswith("\\unrestrict"):
            continue
        if re.match(r"SET transaction_timeout\b", line):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def clean_mysql(sql: str) -> str:
    lines = sql.splitlines()
    if lines and "enable the sandbox mode" in lines[0]:
        lines = lines[1:]
    text = "\n".join(lines) + "\n"
    return re.sub(r"utf8mb4_uca1400_ai_ci", "utf8mb4_unicode_ci", text)


def load_dump(path: Path, *, tmp_dir: Path, pg: PostgresServer | None = None, my: MysqlServer | None = None) -> Database:
    """A new database holding the dump, on the dump's own driver."""
    driver = dump_driver(path)
    sql = path.read_text(encoding="utf-8")
    if driver == "sqlite3":
        db_path = tmp_dir / f"{dump_level(path)}.db"
        con = sqlite3.connect(db_path)
        try:
            con.executescript(sql)
        finally:
            con.close()
        return sqlite_database(db_path)
    if driver == "postgres":
        assert pg is not None
        db = pg.create("pmtdump")
        pg.psql(db, clean_postgres(sql))
        return db
    assert my is not None
    db = my.create("pmtdump")
    my.client(db, clean_mysql(sql))
    return db
