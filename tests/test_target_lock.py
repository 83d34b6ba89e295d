"""One run per target: a second pmigrate is refused (exit 2, naming the first), and a killed run leaves no lock.

The first run is either a real CLI process, or a process that takes the
target's lock through pmigrate.lock and waits: a deterministic holder that the
test kills with SIGKILL, as a crash would.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from pmigrate import cli, config, lock
from pmigrate.errors import FatalError
from pmigrate.journal import locate
from pmigrate.metadata import copier
from pmigrate.options import RunOptions
from pmigrate.report import Report
from tests.conftest import REPO
from tests.metadata_helpers import load_cfg
from tests.servers import Database, sqlite_database

SMALL = ("--users", "4", "--uploads", "20", "--files", "60", "--sizes", "small", "-q")
FILES = 60  # rows in the source's files table
HOST = socket.gethostname()

HOLDER = """
import sys, time
from pmigrate import config, lock
from pmigrate.options import RunOptions
dst = config.load(sys.argv[1])
locks = [lock.metadata_lock(dst.metadata)] if dst.has_metadata else []
locks += [lock.journal_lock(dst, opts=RunOptions())] if dst.has_data else []
assert all(lk.acquire() is None for lk in locks)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lock") / "dep"
    assert cli.main(["fakedb", str(out), "--seed", "3", *SMALL]) == 0
    return out


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pmigrate", *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _hold(target_cfg: Path) -> subprocess.Popen:
    """A process holding the target's locks until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target_cfg)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL: no cleanup of its own runs
    proc.communicate(timeout=30)


def _blobs(files: Path) -> int:
    """Blobs under a file backend's Directory (plikd's ids never start with a dot)."""
    return sum(1 for p in files.rglob("*") if p.is_file() and not p.name.startswith("."))


def _tables(db: Database) -> list[str]:
    if db.driver == "sqlite3" and not Path(db.go_dsn).exists():
        return []
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return sorted(sa.inspect(c).get_table_names())
    finally:
        eng.dispose()


def _count(db: Database, table: str) -> int:
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return c.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar()
    finally:
        eng.dispose()


def _refusal(stderr: str, *, pid: int, target: str) -> None:
    """One line, naming the holder's pid and host and the target."""
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"pmigrate: error: another pmigrate (pid {pid} on {HOST}) has been migrating into {target} since "), stderr


def _lock_is_free(lk: lock.Lock) -> None:
    assert lk.acquire() is None
    lk.release()


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql), "sqlite3"])
def meta_target(request, tmp_path) -> Database:
    if request.param == "sqlite3":
        return sqlite_database(tmp_path / "target" / "plik.db")
    return request.getfixturevalue("pg_db" if request.param == "postgres" else "mysql_db")


def test_metadata_target_held_refuses_a_second_run_until_its_holder_is_killed(deployment, meta_target, tmp_path, run_cli):
    (tmp_path / "target").mkdir(exist_ok=True)
    cfg = tmp_path / "target" / "target.cfg"
    cfg.write_text(meta_target.toml())
    args = ("--config", str(deployment / "plikd.cfg"), "--to", str(cfg), "--metadata-only", "-q")
    target = config.load(cfg).metadata.describe()

    holder = _hold(cfg)
    try:
        r = run_cli(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        _refusal(r.stderr, pid=holder.pid, target=target)
        assert r.stdout == ""
        assert _tables(meta_target) == []  # nothing written
    finally:
        _kill(holder)

    r = run_cli(*args)  # the killed holder's lock went with it
    assert r.returncode == 0, r.stdout + r.stderr
    assert _count(meta_target, "files") == FILES
    _lock_is_free(lock.metadata_lock(config.load(cfg).metadata))
    assert [p.name for p in (tmp_path / "target").iterdir() if "lock" in p.name] == []  # sqlite3: its lock file is gone


def test_journal_held_refuses_a_second_data_run_until_its_holder_is_killed(deployment, tmp_path, run_cli):
    files = tmp_path / "target" / "files"
    cfg = tmp_path / "target" / "target.cfg"
    cfg.parent.mkdir()
    cfg.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{files}"\n')
    args = ("--config", str(deployment / "plikd.cfg"), "--to", str(cfg), "--data-only", "--workers", "2", "-q")

    holder = _hold(cfg)
    try:
        r = run_cli(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        journals = sorted(p.name for p in cfg.parent.glob(".pmigrate-journal-*.db"))
        assert journals == []  # nothing written: no journal, no blob
        journal, _ = locate(config.load(cfg), None)
        _refusal(r.stderr, pid=holder.pid, target=f"file {files} (journal {journal})")
        assert not files.exists()
    finally:
        _kill(holder)

    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    blobs = _blobs(deployment / "files")
    assert f"copied {blobs} blobs" in r.stdout
    assert _blobs(files) == blobs
    _lock_is_free(lock.journal_lock(config.load(cfg), opts=RunOptions()))
    assert [p.name for p in cfg.parent.iterdir() if p.name.endswith(".lock")] == []


@pytest.mark.postgres
def test_two_cli_runs_into_one_empty_postgres_target(deployment, pg_db, tmp_path, run_cli):
    """The first run holds the target while it waits on its source; the second is refused at once; kill -9 frees it."""
    src = tmp_path / "src.cfg"
    # The first run will wait for the source, which this test keeps locked, instead of failing after 5 s.
    src.write_text((deployment / "plikd.cfg").read_text().replace(f'"{deployment / "plik.db"}"', f'"file:{deployment / "plik.db"}?_busy_timeout=60000"'))
    dst = tmp_path / "target.cfg"
    dst.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{tmp_path / "files"}"\n' + pg_db.toml())
    args = ("--config", str(src), "--to", str(dst), "-q")
    pg_lock = lock.metadata_lock(config.load(dst).metadata)

    source = sqlite3.connect(deployment / "plik.db", isolation_level=None)
    source.execute("BEGIN EXCLUSIVE")
    first = _cli(*args)
    try:
        deadline = time.monotonic() + 60
        while (held := pg_lock.probe()) is None:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the target's lock"
            time.sleep(0.05)
        assert held.pid == first.pid
        second = run_cli(*args)
        assert second.returncode == 2, second.stdout + second.stderr
        _refusal(second.stderr, pid=first.pid, target=pg_lock.target)
        assert first.poll() is None  # still running, still holding the target
    finally:
        _kill(first)
        source.execute("ROLLBACK")
        source.close()
    assert _tables(pg_db) == []

    third = run_cli(*args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert _count(pg_db, "files") == FILES
    assert f"copied {_blobs(deployment / 'files')} blobs" in third.stdout


def test_dry_run_and_verify_take_no_lock_and_say_who_holds_it(deployment, tmp_path, run_cli):
    target_db = sqlite_database(tmp_path / "target.db")
    cfg = tmp_path / "target.cfg"
    cfg.write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{tmp_path / "files"}"\n' + target_db.toml())
    args = ("--config", str(deployment / "plikd.cfg"), "--to", str(cfg), "-q")
    assert run_cli(*args).returncode == 0

    holder = _hold(cfg)
    try:
        for extra in (("--dry-run",), ("verify",)):
            cmd = (*extra, *args) if extra == ("verify",) else (*args, *extra)
            r = run_cli(*cmd)
            assert r.returncode == 0, r.stdout + r.stderr
            warned = [line for line in r.stdout.splitlines() if line.startswith(f"pmigrate: warning: another pmigrate (pid {holder.pid} on {HOST})")]
            assert len(warned) == 2, r.stdout  # the metadata target and the journal
            # The holder still holds both: the look took nothing.
            for lk in (lock.metadata_lock(config.load(cfg).metadata), lock.journal_lock(config.load(cfg), opts=RunOptions())):
                assert lk.acquire().pid == holder.pid
    finally:
        _kill(holder)


@pytest.mark.postgres
def test_failure_on_a_target_filled_meanwhile_does_not_claim_it_is_empty(deployment, pg_db, tmp_path):
    """A fresh target that another writer fills after preflight: the message says what it holds."""
    src = config.load(deployment / "plikd.cfg")
    dst = load_cfg(pg_db, tmp_path / "dst.cfg")
    opts = RunOptions(data=False, quiet=True)
    plan = copier.preflight(src, dst, opts=opts)
    assert plan.state == "empty"
    eng = sa.create_engine(pg_db.url)
    with eng.begin() as c:
        c.exec_driver_sql("CREATE TABLE users (id text PRIMARY KEY)")
    eng.dispose()
    with pytest.raises(FatalError) as err:
        copier.run(plan, opts=opts, report=Report("migrate"))
    message = str(err.value)
    assert "empty as before" not in message
    assert "the target holds tables users: empty the database before running again" in message
    assert _tables(pg_db) == ["users"]



@pytest.mark.mysql
def test_mysql_holder_without_a_current_details_file_is_named_by_the_server(mysql_db, tmp_path):
    """A holder on another host (or a stale details file): the server's processlist names its connection, never a stale pid."""
    meta = load_cfg(mysql_db, tmp_path / "dst.cfg").metadata
    first = lock.metadata_lock(meta)
    assert first.acquire() is None
    try:
        first.info.write_text(lock.Holder(pid=1, host="elsewhere", since=0.0).dumps(connection=-1))  # a crashed run's
        held = lock.metadata_lock(meta).acquire()
        assert held.pid is None
        assert held.who().startswith("connection ") and held.who().endswith(" from 127.0.0.1"), held
        assert time.time() - 60 < held.since <= time.time() + 1
    finally:
        first.release()
        first.info.unlink(missing_ok=True)
    _lock_is_free(lock.metadata_lock(meta))
