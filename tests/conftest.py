"""Shared fixtures: real PostgreSQL, MariaDB and S3 servers, Plik dumps, CLI runner."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import dumps as dumps_mod
from tests.servers import (
    MysqlServer,
    PostgresServer,
    S3Server,
    in_ci,
    start_moto,
    stop_process,
    unavailable,
)

REPO = Path(__file__).resolve().parent.parent

# The marker (setup.cfg) a test gets from the server fixtures it uses, directly or through another fixture.
MARK_BY_FIXTURE = {
    "pg_server": "postgres",
    "mysql_server": "mysql",
    "s3_server": "s3",
    "gcs_server": "gcs",
    "swift_server": "swift",
    "dumps_dir": "dumps",
}
# A parameter that picks its database at run time (request.getfixturevalue) names it by one of these.
MARK_BY_PARAM = {"postgres": "postgres", "pg_db": "postgres", "mysql": "mysql", "mysql_db": "mysql"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the servers it needs, so that `-m "not s3"` and the like select by what a test uses."""
    for item in items:
        names = {MARK_BY_FIXTURE[f] for f in getattr(item, "fixturenames", ()) if f in MARK_BY_FIXTURE}
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            names |= {MARK_BY_PARAM[v] for v in callspec.params.values() if isinstance(v, str) and v in MARK_BY_PARAM}
        for name in sorted(names - {m.name for m in item.iter_markers()}):
            item.add_marker(name)


SERVER_MARKS = {"postgres", "mysql", "s3", "gcs", "swift"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Under CI=true a test that needs a server never passes by skipping, whatever skipped it."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        needs = SERVER_MARKS & {m.name for m in item.iter_markers()}
        if needs:
            report.outcome = "failed"
            report.longrepr = f"CI=true but a test needing {', '.join(sorted(needs))} was skipped: {report.longrepr}"


@pytest.fixture(scope="session")
def pg_server():
    try:
        server = PostgresServer()
        server.admin().close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no server here
        unavailable(f"PostgreSQL not reachable: {exc}")
    yield server
    for name in server.created:
        server.drop(name)


@pytest.fixture(scope="session")
def mysql_server():
    try:
        server = MysqlServer()
        server.admin().close()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"MariaDB/MySQL not reachable: {exc}")
    yield server
    for name in server.created:
        server.drop(name)


@pytest.fixture
def pg_db(pg_server):
    """A fresh, empty PostgreSQL database for one test."""
    db = pg_server.create()
    yield db
    pg_server.drop(db.name)


@pytest.fixture
def mysql_db(mysql_server):
    """A fresh, empty MariaDB database for one test."""
    db = mysql_server.create()
    yield db
    mysql_server.drop(db.name)


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    """moto's S3 server as a separate process on a free loopback port."""
    try:
        proc, server = start_moto()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"moto server could not start: {exc}")
    yield server
    stop_process(proc)


@pytest.fixture
def s3_bucket(s3_server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def s3_proxy(s3_server):
    """A fault-injecting proxy in front of the moto server (tests/s3proxy.py): add rules, point configs at proxy.s3."""
    from tests.s3proxy import start_proxy

    with start_proxy(s3_server.url) as proxy:
        proxy.s3 = dataclasses.replace(s3_server, endpoint=proxy.endpoint, url=proxy.url)
        yield proxy


@pytest.fixture(scope="session")
def dumps_dir() -> Path:
    d = dumps_mod.dumps_dir()
    if not d.is_dir():
        unavailable(f"Plik dumps not found at {d} (set PMIGRATE_PLIK_DUMPS)")
    return d


@pytest.fixture
def load_dump(request, tmp_path, dumps_dir):
    """load_dump(path) -> Database: the dump loaded into a fresh database of its driver."""

    def _load(path: Path):
        driver = dumps_mod.dump_driver(path)
        pg = request.getfixturevalue("pg_server") if driver == "postgres" else None
        my = request.getfixturevalue("mysql_server") if driver == "mysql" else None
        return dumps_mod.load_dump(path, tmp_dir=tmp_path, pg=pg, my=my)

    return _load


@pytest.fixture
def run_cli(tmp_path):
    """Run the real CLI in a subprocess: run_cli(*args, env=..., cwd=...) -> CompletedProcess."""

    def _run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        for k in list(full_env):
            if k.startswith("PLIKD_"):
                del full_env[k]
        if env:
            full_env.update(env)
        return subprocess.run(
            [sys.executable, "-m", "pmigrate", *args],
            cwd=cwd or tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return _run


# -- GCS and Swift -------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """gcp-storage-emulator on a free loopback port; STORAGE_EMULATOR_HOST set for this process."""
    from tests.gcs_server import start_gcs

    try:
        server = start_gcs()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"gcp-storage-emulator could not start: {exc}")
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_server) -> str:
    return gcs_server.new_bucket()


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory):
    """A single-node Swift (tempauth, memcached, four servers) under a temporary base."""
    from tests.swift_server import missing_packages, start_swift

    reason = missing_packages()
    if reason:
        unavailable(reason)
    try:
        server = start_swift(tmp_path_factory.mktemp("swift"))
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Swift could not start: {exc}")
    yield server
    server.stop()
