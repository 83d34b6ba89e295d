"""A target database user who may not create tables or write rows is refused before anything is written.

Real PostgreSQL roles and MariaDB users, created by each test and dropped
after it; the real CLI. The dry run refuses exactly as the run does, and the
privileges it asks for are enough for the run to succeed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from tests import servers
from tests.test_cli_errors import assert_usage_error

SMALL = ("--users", "3", "--uploads", "10", "--files", "30", "--sizes", "small", "-q")


@pytest.fixture
def source(tmp_path, run_cli) -> Path:
    assert run_cli("fakedb", str(tmp_path / "src"), *SMALL).returncode == 0
    return tmp_path / "src" / "plikd.cfg"


def _target(path: Path, db: servers.Database, go_dsn: str) -> Path:
    path.write_text(
        f"[MetadataBackendConfig]\n  Driver = \"{db.driver}\"\n  ConnectionString = \"{go_dsn}\"\n"
    )
    return path


# -- postgres ---------------------------------------------------------------------------


def _pg(db: servers.Database, sql: str) -> list[tuple]:
    with psycopg.connect(host=servers.PG_HOST, port=servers.PG_PORT, user=servers.PG_USER,
                         password=servers.PG_PASSWORD or None, dbname=db.name, autocommit=True) as c:  # fmt: skip
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def pg_role(pg_server, pg_db):
    """A login role with no privilege but CONNECT on a fresh database, dropped with what was granted to it."""
    name = f"pmt_role_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as c:
        c.execute(f'CREATE ROLE "{name}" LOGIN')
    # Before PostgreSQL 15 every role may create in schema public.
    _pg(pg_db, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    yield name
    _pg(pg_db, f'DROP OWNED BY "{name}"')
    with pg_server.admin() as c:
        c.execute(f'DROP ROLE IF EXISTS "{name}"')


def _as(db: servers.Database, role: str) -> str:
    return db.go_dsn.replace(f"user={servers.PG_USER}", f"user={role}", 1)


def _pg_tables(db: servers.Database) -> list[str]:
    return [r[0] for r in _pg(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]


def test_postgres_user_who_may_not_create_tables_is_refused(tmp_path, run_cli, source, pg_db, pg_role):
    target = _target(tmp_path / "target.cfg", pg_db, _as(pg_db, pg_role))
    args = ("--config", str(source), "--to", str(target), "--metadata-only", "-q")
    words = (f"the target user {pg_role} lacks CREATE on schema public", f"GRANT USAGE, CREATE ON SCHEMA public TO {pg_role}")
    dry = assert_usage_error(run_cli(*args, "--dry-run"), *words)
    real = assert_usage_error(run_cli(*args), *words)
    assert dry == real
    assert _pg_tables(pg_db) == []

    _pg(pg_db, f'GRANT USAGE, CREATE ON SCHEMA public TO "{pg_role}"')
    dry = run_cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"on postgres {pg_role}@" in dry.stdout and "(schema public)" in dry.stdout
    assert run_cli(*args).returncode == 0


def test_postgres_user_who_may_not_update_a_filled_target_is_refused(tmp_path, run_cli, source, pg_db, pg_role):
    owner = _target(tmp_path / "owner.cfg", pg_db, pg_db.go_dsn)
    assert run_cli("--config", str(source), "--to", str(owner), "--metadata-only", "-q").returncode == 0
    _pg(pg_db, f'GRANT USAGE, CREATE ON SCHEMA public TO "{pg_role}"; GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO "{pg_role}"')
    target = _target(tmp_path / "target.cfg", pg_db, _as(pg_db, pg_role))
    args = ("--config", str(source), "--to", str(target), "--metadata-only", "-q")
    # pmigrate's record of whose the target is gets its row replaced on every run.
    words = ("lacks UPDATE on users, tokens, uploads and 6 more; DELETE on pmigrate_owner in postgres",
             f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {pg_role}")  # fmt: skip
    dry = assert_usage_error(run_cli(*args, "--dry-run"), *words)
    assert assert_usage_error(run_cli(*args), *words) == dry
    # Rows are deleted from Plik's tables with --prune only: DELETE is asked for only then.
    _pg(pg_db, f'GRANT UPDATE ON ALL TABLES IN SCHEMA public TO "{pg_role}"; GRANT DELETE ON pmigrate_owner TO "{pg_role}"')
    assert "lacks DELETE on users, tokens, uploads and" in assert_usage_error(run_cli(*args, "--dry-run", "--prune"))
    for extra in (("--dry-run",), ()):
        res = run_cli(*args, *extra)
        assert res.returncode == 0, res.stdout + res.stderr


# -- mysql / mariadb -------------------------------------------------------------------------


@pytest.fixture
def mysql_user(mysql_server, mysql_db):
    """A user who may only read the test database, dropped after the test."""
    name = f"pmt_u_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    c = mysql_server.admin()
    try:
        with c.cursor() as cur:
            cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT SELECT ON `{mysql_db.name}`.* TO '{name}'@'%'")
        yield name, password
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        c.close()


def test_mysql_user_who_may_not_create_tables_is_refused(tmp_path, run_cli, source, mysql_server, mysql_db, mysql_user):
    name, password = mysql_user
    go = mysql_db.go_dsn.replace(f"{servers.MY_USER}:{servers.MY_PASSWORD}@", f"{name}:{password}@", 1)
    target = _target(tmp_path / "target.cfg", mysql_db, go)
    args = ("--config", str(source), "--to", str(target), "--metadata-only", "-q")
    words = (f"the target user '{name}'@'%' lacks CREATE on database {mysql_db.name}; CREATE TEMPORARY TABLES on database "
             f"{mysql_db.name}; ALTER on database {mysql_db.name}; DROP on database {mysql_db.name}; INSERT on pmigrate_owner; "
             "DELETE on pmigrate_owner",
             f"GRANT CREATE, CREATE TEMPORARY TABLES, ALTER, DROP, SELECT, INSERT, UPDATE, DELETE ON `{mysql_db.name}`.*")  # fmt: skip
    dry = assert_usage_error(run_cli(*args, "--dry-run"), *words)
    assert assert_usage_error(run_cli(*args), *words) == dry
    assert password not in dry
    c = mysql_server.admin()
    try:
        with c.cursor() as cur:
            cur.execute(f"SHOW TABLES FROM `{mysql_db.name}`")
            assert cur.fetchall() == ()
            cur.execute(f"GRANT CREATE, CREATE TEMPORARY TABLES, ALTER, DROP, INSERT, UPDATE, DELETE ON `{mysql_db.name}`.* TO '{name}'@'%'")
    finally:
        c.close()
    for extra in (("--dry-run",), ()):
        res = run_cli(*args, *extra)
        assert res.returncode == 0, res.stdout + res.stderr
