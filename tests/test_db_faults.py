"""Database faults during the metadata copy, on the real servers.

- The target's connection killed mid-copy (MariaDB ``KILL``, PostgreSQL
  ``pg_terminate_backend``): exit 1, one line naming the lost connection, a
  problem in the JSON report, and a target holding nothing of the run (fresh)
  or as it was (re-run); the next run completes and verifies.
- pmigrate itself killed (SIGKILL) mid-load on MariaDB: only staging tables
  are left, which the next run drops, and nothing else.
- Another session holding a table lock on the target or the source: the wait
  is named on stderr (with -q) with its holder, and ends at --lock-timeout,
  the target untouched; a lock let go within the timeout lets the run finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from pmigrate import cli
from tests.conftest import REPO
from tests.metadata_helpers import table_rows, write_cfg
from tests.servers import MY_HOST, MY_PORT, PG_HOST, PG_PORT, Database

BIG = 50_000  # file rows: a copy of a few seconds, long enough to be cut
PREFIX = "pmigrate_staging_"  # pmigrate.metadata.staging.PREFIX, spelled out as a user sees it


def _fakedb(out: Path, *extra: str) -> Path:
    assert cli.main(["fakedb", str(out), "--metadata-only", "--seed", "5", "-q", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return _fakedb(tmp_path_factory.mktemp("faults") / "big", "--files", str(BIG))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return _fakedb(tmp_path_factory.mktemp("faults") / "small", "--files", "300")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pmigrate", *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _args(src: Path, dst: Path, *extra: str) -> tuple[str, ...]:
    return ("--config", str(src), "--to", str(dst), "--metadata-only", "-q", *extra)


def _when_seen(proc: subprocess.Popen, find: Callable[[], object], *, timeout: float = 120) -> object:
    """Poll find() until it returns something, while proc runs; None when proc ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.02)
    return None


def _mysql_session(mysql_server, db: Database, pattern: str) -> Callable[[], int | None]:
    admin = mysql_server.admin()

    def find() -> int | None:
        with admin.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND INFO LIKE %s", (db.name, pattern))
            row = cur.fetchone()
        return row[0] if row else None

    return find


def _mysql(mysql_server, sql: str, params: tuple = ()) -> list[tuple]:
    c = mysql_server.admin()
    try:
        with c.cursor() as cur:
            cur.execute(sql, params or None)
            return list(cur.fetchall())
    finally:
        c.close()


def _tables(db: Database) -> list[str]:
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return sorted(sa.inspect(c).get_table_names())
    finally:
        eng.dispose()


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _problem_kinds(path: Path) -> list[str]:
    return [p["kind"] for p in json.loads(path.read_text())["problems"]]


def _rerun_and_verify(run_cli, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    again = run_cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    verify = run_cli("verify", *args)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return again


def _mysql_fks(mysql_server, db: Database) -> set[tuple[str, str]]:
    rows = _mysql(
        mysql_server,
        "SELECT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s",
        (db.name,),
    )
    return set(rows)


# -- a connection lost mid-copy ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.mysql
@pytest.mark.parametrize("table", ["users", "files"])
def test_mysql_connection_killed_mid_load_leaves_nothing(big, mysql_server, mysql_db, tmp_path, run_cli, table):
    dst = write_cfg(mysql_db, tmp_path / "dst.cfg")
    args = _args(big / "plikd.cfg", dst)
    proc = _start(*args, "--json", str(tmp_path / "r.json"))
    session = _when_seen(proc, _mysql_session(mysql_server, mysql_db, f"LOAD DATA%{table}`%"))
    assert session, "the copy ended before its connection could be killed"
    started = time.monotonic()
    _mysql(mysql_server, f"KILL {int(session)}")
    _, err = proc.communicate(timeout=120)
    named_in = time.monotonic() - started

    assert proc.returncode == 1
    line = _one_error_line(err)
    assert line.startswith("pmigrate: error: lost the connection to the target ")
    assert f"at {MY_HOST}:{MY_PORT}" in line and ("MariaDB" in line or "MySQL" in line)
    assert "The target holds nothing of this run" in line and "running the same command again" in line
    assert named_in < 30, named_in
    assert _tables(mysql_db) == []  # no table of the run, staging ones included
    assert _problem_kinds(tmp_path / "r.json") == ["connection-lost"]

    _rerun_and_verify(run_cli, args)
    assert not [t for t in _tables(mysql_db) if t.startswith(PREFIX)]
    # Renamed parents took their children's foreign keys along.
    assert _mysql_fks(mysql_server, mysql_db) == {("tokens", "users"), ("files", "uploads")}
    with pytest.raises(Exception, match="foreign key constraint fails"):
        _mysql(mysql_server, f"INSERT INTO `{mysql_db.name}`.files (id, upload_id) VALUES ('ORPHANXXXXXXXXXX', 'NOSUCHUPLOADXXXX')")


@pytest.mark.slow
@pytest.mark.mysql
def test_mysql_connection_killed_mid_merge_leaves_the_target_as_before(big, mysql_server, mysql_db, tmp_path, run_cli):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "plik.db").write_bytes((big / "plik.db").read_bytes())
    src = src_dir / "plikd.cfg"
    src.write_text((big / "plikd.cfg").read_text().replace(str(big / "plik.db"), str(src_dir / "plik.db")))
    dst = write_cfg(mysql_db, tmp_path / "dst.cfg")
    args = _args(src, dst)
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    eng = sa.create_engine(f"sqlite:///{src_dir / 'plik.db'}")
    with eng.begin() as c:  # plikd went on: every file was downloaded once more
        c.exec_driver_sql("UPDATE files SET download_count = COALESCE(download_count, 0) + 1")
    eng.dispose()
    before = table_rows(mysql_db, digits=3)

    proc = _start(*args, "--json", str(tmp_path / "r.json"))
    session = _when_seen(proc, _mysql_session(mysql_server, mysql_db, "INSERT INTO `files`%"))
    assert session, "the merge ended before its connection could be killed"
    _mysql(mysql_server, f"KILL {int(session)}")
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 1
    line = _one_error_line(err)
    assert line.startswith("pmigrate: error: lost the connection to the target ") and f"at {MY_HOST}:{MY_PORT}" in line
    assert "The target was rolled back to its state before this run" in line
    assert table_rows(mysql_db, digits=3) == before
    assert _problem_kinds(tmp_path / "r.json") == ["connection-lost"]
    _rerun_and_verify(run_cli, args)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_connection_terminated_mid_load_leaves_nothing(big, pg_server, pg_db, tmp_path, run_cli):
    dst = write_cfg(pg_db, tmp_path / "dst.cfg")
    args = _args(big / "plikd.cfg", dst)
    admin = pg_server.admin()

    def find() -> int | None:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE 'COPY \"files\"%%' AND state = 'active'", (pg_db.name,)
        ).fetchone()
        return row[0] if row else None

    try:
        proc = _start(*args, "--json", str(tmp_path / "r.json"))
        pid = _when_seen(proc, find)
        assert pid, "the copy ended before its connection could be terminated"
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _, err = proc.communicate(timeout=120)
    finally:
        admin.close()

    assert proc.returncode == 1
    line = _one_error_line(err)
    assert line.startswith(f"pmigrate: error: lost the connection to the target PostgreSQL at {PG_HOST}:{PG_PORT}")
    assert "it is empty as before" in line
    assert _tables(pg_db) == []
    assert _problem_kinds(tmp_path / "r.json") == ["connection-lost"]
    _rerun_and_verify(run_cli, args)


# -- pmigrate killed: staging tables, and only those, are left and dropped ---------------


@pytest.mark.slow
@pytest.mark.mysql
def test_a_killed_run_leaves_only_staging_tables_which_the_next_drops(big, mysql_server, mysql_db, tmp_path, run_cli):
    dst = write_cfg(mysql_db, tmp_path / "dst.cfg")
    args = _args(big / "plikd.cfg", dst)
    proc = _start(*args)
    seen = _when_seen(proc, _mysql_session(mysql_server, mysql_db, "LOAD DATA%files`%"))
    assert seen, "the copy ended before it could be killed"
    proc.kill()  # SIGKILL: no cleanup runs
    proc.communicate(timeout=60)

    left = _tables(mysql_db)
    assert left and all(t.startswith(PREFIX) for t in left), left
    assert f"{PREFIX}pmigrate_owner" in left  # the record is staged with the tables

    again = _rerun_and_verify(run_cli, args)
    assert f"dropped {len(left)} staging table(s) a stopped run left" in again.stdout
    assert not [t for t in _tables(mysql_db) if t.startswith(PREFIX)]


@pytest.mark.mysql
def test_staging_leftovers_are_dropped_but_a_foreign_table_beside_them_is_refused(small, mysql_server, mysql_db, tmp_path, run_cli):
    leftover = f"{PREFIX}users"
    mysql_server.client(mysql_db, f"CREATE TABLE `{leftover}` (id varchar(16) PRIMARY KEY); INSERT INTO `{leftover}` VALUES ('HALF');")
    dst = write_cfg(mysql_db, tmp_path / "dst.cfg")
    args = _args(small / "plikd.cfg", dst)
    ok = run_cli(*args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert leftover not in _tables(mysql_db)

    other = mysql_server.create()
    try:
        mysql_server.client(other, f"CREATE TABLE `{leftover}` (id varchar(16)); CREATE TABLE notes (body text); INSERT INTO notes VALUES ('mine');")
        refused = run_cli(*_args(small / "plikd.cfg", write_cfg(other, tmp_path / "other.cfg")))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "notes" in refused.stderr
        assert _tables(other) == sorted([leftover, "notes"])  # nothing dropped
    finally:
        mysql_server.drop(other.name)


# -- lock waits ---------------------------------------------------------------------


def _run_reading_stderr(args: tuple[str, ...], *, on_line: Callable[[str], None]) -> tuple[int, str]:
    """Run the CLI, handing each stderr line to on_line as it comes; (exit status, stderr)."""
    proc = _start(*args)
    lines: list[str] = []

    def pump() -> None:
        for text in proc.stderr:
            lines.append(text)
            on_line(text)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    proc.stdout.read()
    proc.wait(timeout=120)
    t.join(timeout=10)
    return proc.returncode, "".join(lines)


def _assert_gave_up(err: str, *, holder: str, side: str, state: str) -> None:
    lines = err.strip().splitlines()
    warnings = [x for x in lines if x.startswith("pmigrate: warning: ")]
    assert warnings and all(holder in w and f"the {side} " in w for w in warnings), err
    assert "gives up after 5 s (--lock-timeout)" in warnings[0]
    error = lines[-1]
    assert error.startswith(f"pmigrate: error: gave up after waiting 5 s (--lock-timeout) on the {side} "), err
    # The wait may come before the load (the preflight's key-collision check reads the target's keys):
    # then nothing was written at all, which is as good.
    assert holder in error and (state in error or "Nothing was written" in error), err
    assert len(lines) == len(warnings) + 1, err


@pytest.mark.slow
@pytest.mark.mysql
def test_mysql_table_lock_is_named_then_given_up_on(small, mysql_server, mysql_db, tmp_path, run_cli):
    import pymysql

    from tests.servers import MY_PASSWORD, MY_USER

    dst = write_cfg(mysql_db, tmp_path / "dst.cfg")
    args = _args(small / "plikd.cfg", dst)
    assert run_cli(*args).returncode == 0
    before = table_rows(mysql_db, digits=3)
    holder = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password=MY_PASSWORD, database=mysql_db.name, autocommit=True)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES files WRITE")
        held = run_cli(*args, "--lock-timeout", "5")
        assert held.returncode == 1, held.stdout + held.stderr
        _assert_gave_up(held.stderr, holder=f"connection {holder.thread_id()} ", side="target", state="rolled back to its state before this run")
        with holder.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        assert table_rows(mysql_db, digits=3) == before

        with holder.cursor() as cur:
            cur.execute("LOCK TABLES files WRITE")

        def release(line: str) -> None:
            if "warning:" in line:
                with holder.cursor() as cur:
                    cur.execute("UNLOCK TABLES")

        code, err = _run_reading_stderr((*args, "--lock-timeout", "60"), on_line=release)
        assert code == 0, err
        assert f"connection {holder.thread_id()} " in err
    finally:
        holder.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_table_lock_on_the_target_is_named_then_given_up_on(small, pg_db, tmp_path, run_cli):
    import psycopg

    from tests.servers import PG_PASSWORD, PG_USER

    dst = write_cfg(pg_db, tmp_path / "dst.cfg")
    args = _args(small / "plikd.cfg", dst)
    assert run_cli(*args).returncode == 0
    before = table_rows(pg_db, digits=6)
    holder = psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname=pg_db.name, application_name="nightly-report"
    )
    try:
        holder.execute("LOCK TABLE files IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        held = run_cli(*args, "--lock-timeout", "5")
        assert held.returncode == 1, held.stdout + held.stderr
        _assert_gave_up(held.stderr, holder=f"pid {pid} (user {PG_USER}, application nightly-report, idle in transaction, query started ",
                        side="target", state="rolled back to its state before this run")  # fmt: skip
        holder.rollback()
        assert table_rows(pg_db, digits=6) == before
        holder.execute("LOCK TABLE files IN ACCESS EXCLUSIVE MODE")

        code, err = _run_reading_stderr((*args, "--lock-timeout", "60"), on_line=lambda line: "warning:" in line and holder.rollback())
        assert code == 0, err
        assert f"pid {pid} " in err
    finally:
        holder.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_table_lock_on_the_source_is_named_then_given_up_on(pg_db, tmp_path, run_cli):
    import psycopg

    from tests.servers import PG_PASSWORD, PG_USER

    dep = tmp_path / "dep"
    assert cli.main(["fakedb", str(dep), "--metadata-only", "--files", "300", "-q", "--metadata-url", pg_db.url]) == 0
    src = write_cfg(pg_db, tmp_path / "src.cfg")
    target = tmp_path / "target" / "plik.db"
    target.parent.mkdir()
    dst = tmp_path / "dst.cfg"
    dst.write_text(f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{target}"\n')
    args = _args(src, dst)
    holder = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname=pg_db.name, application_name="vacuum-job")
    try:
        holder.execute("LOCK TABLE files IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        held = run_cli(*args, "--lock-timeout", "5")
        assert held.returncode == 1, held.stdout + held.stderr
        _assert_gave_up(held.stderr, holder=f"pid {pid} (user {PG_USER}, application vacuum-job, ", side="source", state="Nothing was written")
        assert not target.exists() or not sa.inspect(sa.create_engine(f"sqlite:///{target}")).get_table_names()
    finally:
        holder.close()
    _rerun_and_verify(run_cli, args)
