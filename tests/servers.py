"""Real servers for the tests: PostgreSQL and MariaDB databases, a moto S3 server.

Each server test gets a database of its own, created and dropped here. A
server that is absent skips its tests with the reason, except under CI=true,
where it fails them: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

PG_HOST = os.environ.get("PMIGRATE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PMIGRATE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PMIGRATE_TEST_PG_USER", "postgres")
PG_PASSWORD = os.environ.get("PMIGRATE_TEST_PG_PASSWORD", "")
MY_HOST = os.environ.get("PMIGRATE_TEST_MYSQL_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("PMIGRATE_TEST_MYSQL_PORT", "3306"))
MY_USER = os.environ.get("PMIGRATE_TEST_MYSQL_USER", "root")
MY_PASSWORD = os.environ.get("PMIGRATE_TEST_MYSQL_PASSWORD", "")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip on a laptop; fail under CI, where every server must be there."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)  # only outside CI: above, CI=true fails instead


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, *, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a server we started, by its own PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- databases ---------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """A fresh database on a real server, as plikd and SQLAlchemy name it."""

    driver: str  # sqlite3 | postgres | mysql
    name: str
    go_dsn: str  # plikd's MetadataBackendConfig.ConnectionString
    url: str  # SQLAlchemy URL

    def toml(self) -> str:
        return (
            "[MetadataBackendConfig]\n"
            f'  Driver = "{self.driver}"\n'
            f"  ConnectionString = {_toml_str(self.go_dsn)}\n"
        )


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sqlite_database(path: Path) -> Database:
    return Database("sqlite3", path.stem, str(path), f"sqlite:///{path}")


class PostgresServer:
    def __init__(self) -> None:
        import psycopg

        self._psycopg = psycopg
        self.created: list[str] = []

    def admin(self):
        return self._psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname="postgres", autocommit=True
        )

    def create(self, prefix: str = "pmt") -> Database:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with self.admin() as c:
            c.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        pw = f" password={PG_PASSWORD}" if PG_PASSWORD else ""
        go = f"host={PG_HOST} port={PG_PORT} user={PG_USER}{pw} dbname={name} sslmode=disable"
        url = f"postgresql+psycopg://{quote(PG_USER)}:{quote(PG_PASSWORD, safe='')}@{PG_HOST}:{PG_PORT}/{name}"
        return Database("postgres", name, go, url)

    def drop(self, name: str) -> None:
        with self.admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, db: Database, sql: str) -> None:
        env = dict(os.environ, PGPASSWORD=PG_PASSWORD)
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", db.name],
            input=sql.encode(),
            env=env,
            check=True,
            capture_output=True,
        )


class MysqlServer:
    def __init__(self) -> None:
        import pymysql

        self._pymysql = pymysql
        self.created: list[str] = []

    def admin(self):
        return self._pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password=MY_PASSWORD, autocommit=True)

    def create(self, prefix: str = "pmt") -> Database:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        c = self.admin()
        try:
            with c.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        finally:
            c.close()
        self.created.append(name)
        go = f"{MY_USER}:{MY_PASSWORD}@tcp({MY_HOST}:{MY_PORT})/{name}?charset=utf8mb4&parseTime=True&loc=Local"
        url = f"mysql+pymysql://{quote(MY_USER)}:{quote(MY_PASSWORD, safe='')}@{MY_HOST}:{MY_PORT}/{name}?charset=utf8mb4"
        return Database("mysql", name, go, url)

    def drop(self, name: str) -> None:
        c = self.admin()
        try:
            with c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            c.close()

    def client(self, db: Database, sql: str) -> None:
        cmd = ["mariadb" if _has("mariadb") else "mysql", "-h", MY_HOST, "-P", str(MY_PORT), "-u", MY_USER, db.name]
        env = dict(os.environ, MYSQL_PWD=MY_PASSWORD)
        subprocess.run(cmd, input=sql.encode(), env=env, check=True, capture_output=True)


def _has(cmd: str) -> bool:
    from shutil import which

    return which(cmd) is not None


# -- S3 ----------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port, as plikd's Endpoint
    url: str  # http://host:port
    access_key: str = "testing-access-key"
    secret_key: str = "testing-secret-key-0123456789"
    region: str = "us-east-1"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def new_bucket(self, prefix: str = "pmt") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def toml(self, bucket: str, *, prefix: str = "", extra: str = "") -> str:
        return (
            'DataBackend = "s3"\n[DataBackendConfig]\n'
            f'  Endpoint = "{self.endpoint}"\n  AccessKeyID = "{self.access_key}"\n'
            f'  SecretAccessKey = "{self.secret_key}"\n  Bucket = "{bucket}"\n'
            f'  Location = "{self.region}"\n  Prefix = "{prefix}"\n  UseSSL = false\n{extra}'
        )


def start_moto(*, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, S3Server]:
    """moto's S3 server on a free port; ``extra_env`` for its settings (e.g. INITIAL_NO_AUTH_ACTION_COUNT)."""
    port = free_port()
    env = dict(os.environ, **(extra_env or {}))
    env.pop("AWS_CA_BUNDLE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", proc=proc)
    except Exception:
        stop_process(proc)
        raise
    return proc, S3Server(endpoint=f"127.0.0.1:{port}", url=f"http://127.0.0.1:{port}")
